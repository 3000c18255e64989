"""DVC edge, the only module that imports dvc: data stages, split md5s, push and pull."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import yaml

from visiongate import progress
from visiongate.errors import DataError, NotFound
from visiongate.paths import SPLITS


@contextmanager
def _stage_environment(root: Path):
    """Stage commands say `python -m ...`: make that the interpreter running visiongate."""
    old_path, old_cwd = os.environ.get("PATH", ""), Path.cwd()
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), old_path])
    os.chdir(root)
    try:
        yield
    finally:
        os.environ["PATH"] = old_path
        os.chdir(old_cwd)


def _follow_current_streams() -> None:
    """Point DVC's console log handlers at the current sys.stdout/stderr (test capture,
    redirect_stdout may have swapped them; a closed one fails the run), and keep its records
    from the root logger's handlers, whose Prefect one adds a traceback to each."""
    import logging
    from dvc.logger import LoggerHandler

    for name in ("dvc", "dvc_objects", "dvc_data"):
        logger = logging.getLogger(name)
        own = [h for h in logger.handlers if isinstance(h, LoggerHandler)]  # not pytest's
        logger.propagate = not own
        for handler in own:
            handler.stream = sys.stderr if handler.level >= logging.WARNING else sys.stdout


def _open_repo(root: Path):
    """DVC's Repo at root; NotFound when root is no DVC project (a --root the user named)."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    _follow_current_streams()
    try:
        return Repo(str(root))
    except NotDvcRepoError:
        raise NotFound(f"{root} is not a DVC project (no .dvc/): run `dvc init` there") from None


def reproduce(root: Path, dataset: str) -> dict[str, str]:
    """Run `dvc repro` for the stages that produce data/prepared/<dataset>; return split md5s."""
    from dvc.exceptions import DvcException

    root = Path(root).resolve()
    with _stage_environment(root), _open_repo(root) as repo:
        targets = [s.addressing for s in repo.index.stages if _produces(s, dataset)]
        if not targets:
            raise DataError(f"no stage in {root / 'dvc.yaml'} produces data/prepared/{dataset}")
        _pull_missing(repo, targets, dataset)
        try:
            repo.reproduce(targets=targets)
        except DvcException as err:
            cause = f" ({err.__cause__})" if err.__cause__ else ""
            raise DataError(f"`dvc repro {' '.join(targets)}` failed: {err}{cause}; the "
                            "stage's own message is printed above") from err
    return split_md5s(root, dataset)


def _remote(repo) -> tuple[str, str] | None:
    """(name, url) of the project's default DVC remote (`dvc remote add -d`), or None."""
    name = repo.config["core"].get("remote")
    return (name, repo.config["remote"].get(name, {}).get("url", "?")) if name else None


def _pull_missing(repo, targets: list[str], dataset: str) -> None:
    """A worker's clone, with dvc.yaml and dvc.lock but not the bytes: `dvc pull` the pinned
    data from the default remote before `dvc repro` would recompute or fail on it. A remote
    that is unreachable or lacks pinned files (an unfinished push) is a DataError naming it."""
    remote = _remote(repo)
    produce = [s for s in repo.index.stages if s.addressing in targets]
    deps = {d.fs_path for s in produce for d in s.deps}  # e.g. data/raw/<name> (its .dvc)
    stages = produce + [s for s in repo.index.stages if any(o.fs_path in deps for o in s.outs)]
    if remote is None or all(o.exists or not o.hash_info for s in stages for o in s.outs):
        return  # no remote, or every pinned output is here (a new stage pins nothing yet)
    try:
        repo.pull(targets=[s.addressing for s in stages])
    except _transfer_errors() as err:
        raise DataError(
            f"data/prepared/{dataset} is pinned in dvc.lock but not here, and pulling it from "
            f"DVC remote {remote[0]!r} ({remote[1]}) failed: {_why(err)}. If "
            "the remote cannot be reached, check its endpoint and credentials; if files are "
            "missing on it, the push that pinned this version did not finish: run `dvc push` "
            "where the data was imported. Nothing was trained.") from err


def _transfer_errors() -> tuple[type[BaseException], ...]:
    """DVC's errors and what it lets through from S3 when the server stops mid-transfer."""
    from dvc.exceptions import DvcException
    try:
        from aiohttp import ClientError as HttpError
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # no S3 support installed
        return DvcException, OSError
    return DvcException, OSError, HttpError, BotoCoreError, ClientError


def _why(err: Exception) -> str:
    """DVC's message on one line (it lists paths line by line), at most 500 characters."""
    text = " ".join((f"{err} ({err.__cause__})" if err.__cause__ else str(err)).split())
    return text if len(text) <= 500 else text[:497] + "..."


def push(root: Path, dataset: str) -> tuple[str, int] | None:
    """`dvc push` the dataset (its raw folder and prepared splits) to the default remote:
    (remote name, files pushed), or None when the project has no default remote."""
    root = Path(root).resolve()
    with _stage_environment(root), _open_repo(root) as repo:
        remote = _remote(repo)
        if remote is None:
            return None
        targets = [s.addressing for s in repo.index.stages if _produces(s, dataset)]
        try:
            return remote[0], repo.push(targets=targets, with_deps=True)
        except _transfer_errors() as err:
            raise DataError(f"the import is pinned here, but pushing it to DVC remote "
                            f"{remote[0]!r} ({remote[1]}) failed: {_why(err)}; "
                            "workers cannot pull it until `dvc push` succeeds") from err


def up_to_date(root: Path, dataset: str) -> bool:
    """Whether `dvc repro` would run nothing for data/prepared/<dataset>: its stages'
    dependencies and params equal what dvc.lock recorded (`dvc status`, nothing run)."""
    with _open_repo(Path(root).resolve()) as repo:
        targets = [s.addressing for s in repo.index.stages if _produces(s, dataset)]
        return bool(targets) and not repo.status(targets=targets)


def _produces(stage, dataset: str) -> bool:
    """Does the stage write data/prepared/<dataset> or a path in it (never `<dataset>2`)?"""
    folder = f"data/prepared/{dataset}"
    return any(_overlaps(str(out.def_path), folder) for out in stage.outs)


def split_md5s(root: Path, dataset: str) -> dict[str, str]:
    """md5 of each split directory as pinned in dvc.lock (DVC's `.dir` hash)."""
    lock_path = Path(root) / "dvc.lock"
    if not lock_path.exists():
        raise NotFound(f"{lock_path} is missing: run `dvc repro` first")
    lock = yaml.safe_load(lock_path.read_text()) or {}
    found: dict[str, str] = {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs", []):
            for split in SPLITS:
                if out["path"].rstrip("/") == f"data/prepared/{dataset}/{split}":
                    found[split] = out["md5"].removesuffix(".dir")
    missing = [s for s in SPLITS if s not in found]
    if missing:
        raise DataError(f"dvc.lock pins no md5 for data/prepared/{dataset}/{{{','.join(missing)}}}")
    return found


def track(root: Path, path: str) -> None:
    """`dvc add <path>` (relative to root): writes <path>.dvc and moves the bytes to the cache."""
    root = Path(root).resolve()
    with _stage_environment(root), _open_repo(root) as repo:
        repo.add([path])


def tracked_md5(root: Path, path: str) -> str | None:
    """The md5 that <path>.dvc pins for a file tracked with `dvc add`, or None."""
    dvc_file = Path(root) / f"{path}.dvc"
    if not dvc_file.is_file() or dvc_file.stat().st_size > 1 << 20:
        return None
    try:
        outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or []
        return str(outs[0]["md5"]) if len(outs) == 1 else None
    except (yaml.YAMLError, AttributeError, KeyError, TypeError):
        return None


def pin_file(root: Path, path: str) -> str:
    """md5 of the file at <path> (relative to root), as its .dvc file pins it: `dvc add`
    again when the file was edited since (or never tracked), so the pin is its bytes."""
    from dvc.exceptions import DvcException

    md5 = _md5(Path(root) / path)
    if tracked_md5(root, path) != md5:
        try:
            track(root, path)
        except DvcException as err:
            raise DataError(f"`dvc add {path}` failed: {err}") from err
        if tracked_md5(root, path) != md5:
            raise DataError(f"`dvc add {path}` did not pin its md5 {md5} in {path}.dvc")
    return md5


def restore(root: Path, path: str) -> bool:
    """`dvc checkout <path>.dvc` when <path> is missing but tracked; True if it is there now."""
    from dvc.exceptions import DvcException

    root = Path(root).resolve()
    if (root / path).exists():
        return True
    if not (root / f"{path}.dvc").is_file():
        return False
    with _stage_environment(root), _open_repo(root) as repo:
        try:
            repo.checkout(targets=[f"{path}.dvc"])
        except DvcException as err:
            raise DataError(f"{path} is tracked in {path}.dvc but cannot be restored from "
                            f"the DVC cache: {err}") from err
    return (root / path).exists()


def set_stage(root: Path, name: str, cmd: str, deps: list[str], outs: list[str],
              params: list) -> None:
    """Add (or replace) stage `name` in root/dvc.yaml; the rest of the file, its comments
    and layout stay as they are. params: ["section"] or [{"file.yaml": ["section"]}]."""
    from ruamel.yaml import YAML  # ships with dvc; round-trips comments

    path = Path(root) / "dvc.yaml"
    yaml_rt = YAML()
    yaml_rt.indent(mapping=2, sequence=4, offset=2)  # the layout dvc.yaml is written in
    yaml_rt.width = 4096                             # never wrap a long cmd
    document = (yaml_rt.load(path.read_text()) if path.is_file() else None) or {}
    stages = document.setdefault("stages", {})
    _refuse_clash(stages, name, outs, path)
    entry = {"cmd": cmd, "deps": deps, "outs": outs}
    if params:
        entry = {"cmd": cmd, "deps": deps, "params": params, "outs": outs}
    stages[name] = entry
    with path.open("w") as f:
        yaml_rt.dump(document, f)


def check_stage(root: Path, name: str, paths: list[str]) -> None:
    """DataError when a stage of root/dvc.yaml other than `name` writes one of paths (or
    a path in or above one): `set_stage` would refuse it, so callers check first."""
    path = Path(root) / "dvc.yaml"
    document = yaml.safe_load(path.read_text()) if path.is_file() else None
    _refuse_clash((document or {}).get("stages") or {}, name, paths, path)


def _refuse_clash(stages: dict, name: str, outs: list[str], path: Path) -> None:
    for other, stage in stages.items():
        clash = [o for o in outs for theirs in (stage or {}).get("outs", [])
                 if _overlaps(o, theirs if isinstance(theirs, str) else next(iter(theirs)))]
        if other != name and clash:
            raise DataError(f"stage {other!r} in {path} already writes {clash[0]}: "
                            "choose another dataset name")


def _overlaps(a: str, b: str) -> bool:
    a, b = a.rstrip("/"), b.rstrip("/")
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def verify(root: Path, dataset: str, md5s: dict[str, str]) -> int:
    """md5 of every file of each pinned split — in the workspace and in DVC's cache —
    against DVC's listing for that split; DataError naming each mismatch. Returns the
    number of files checked. Guards training against bit rot and hand edits that DVC's
    own mtime-based state would miss."""
    root = Path(root).resolve()
    with _open_repo(root) as repo:
        cache = Path(repo.cache.local.path)
    problems, files = [], []
    for split, md5 in md5s.items():
        listing_path = cache / md5[:2] / f"{md5[2:]}.dir"
        if not listing_path.is_file() or _md5(listing_path) != md5:
            problems.append(f"DVC cache listing of data/prepared/{dataset}/{split} "
                            f"({listing_path}) is missing or corrupted")
        else:
            files += [(split, entry) for entry in json.loads(listing_path.read_text())]
    for split, entry in progress.bar(files, desc="re-hash", unit="file"):
        rel = f"data/prepared/{dataset}/{split}/{entry['relpath']}"
        for where, path in (("workspace", root / rel),
                            ("DVC cache", cache / entry["md5"][:2] / entry["md5"][2:])):
            found = _md5(path) if path.is_file() else "missing"
            if found != entry["md5"]:
                problems.append(f"{rel} ({where}): md5 {found}, pinned {entry['md5']}")
    if problems:
        raise DataError(f"{len(problems)} data file(s) differ from what dvc.lock pins — "
                        f"corrupted; nothing was trained: " + "; ".join(problems[:5]))
    return len(files)


def _md5(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()
