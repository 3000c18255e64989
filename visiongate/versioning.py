"""DVC edge: bring data stages up to date and read the md5 that pins each split.

The only module that imports dvc.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import yaml

SPLITS = ("train", "val", "test")


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


def reproduce(root: Path, dataset: str) -> dict[str, str]:
    """Run `dvc repro` for the stages that produce data/prepared/<dataset>; return split md5s."""
    from dvc.repo import Repo

    root = Path(root).resolve()
    with _stage_environment(root), Repo(str(root)) as repo:
        targets = [s.addressing for s in repo.index.stages if _produces(s, dataset)]
        if not targets:
            raise ValueError(f"no stage in {root / 'dvc.yaml'} produces data/prepared/{dataset}")
        repo.reproduce(targets=targets)
    return split_md5s(root, dataset)


def _produces(stage, dataset: str) -> bool:
    prefix = f"data/prepared/{dataset}"
    return any(str(out.def_path).startswith(prefix) for out in stage.outs)


def split_md5s(root: Path, dataset: str) -> dict[str, str]:
    """md5 of each split directory as pinned in dvc.lock (DVC's `.dir` hash)."""
    lock_path = Path(root) / "dvc.lock"
    if not lock_path.exists():
        raise FileNotFoundError(f"{lock_path} is missing: run `dvc repro` first")
    lock = yaml.safe_load(lock_path.read_text()) or {}
    found: dict[str, str] = {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs", []):
            for split in SPLITS:
                if out["path"].rstrip("/") == f"data/prepared/{dataset}/{split}":
                    found[split] = out["md5"].removesuffix(".dir")
    missing = [s for s in SPLITS if s not in found]
    if missing:
        raise ValueError(f"dvc.lock pins no md5 for data/prepared/{dataset}/{{{','.join(missing)}}}")
    return found
