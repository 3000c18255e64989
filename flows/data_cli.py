"""`visiongate data import|validate|stats`: bring a labelled dataset under DVC, check it,
describe it (`data review|exclude`: flows/exclude_cli.py).

    visiongate data import --format yolo path/to/src --name mydata [--split train=0.7,...]
    visiongate data import --format folders path/to/imagefolder --name pets   # or csv
    visiongate data validate mydata
    visiongate data stats mydata [--out .cache/stats/mydata]
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shlex
import sys
from contextlib import contextmanager
from pathlib import Path

import yaml

from visiongate.errors import ConfigError, DataError, NotFound
from visiongate.paths import Project

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # fullmatch; DVC stage names allow no other
PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"             # a path part: no `..`, no leading `-`
RELATIVE = re.compile(rf"{PART}(/{PART})*")       # no shell metacharacter, no absolute path
SPLIT_NAMES = ("train", "val", "test")
# = visiongate.datasets.formats.FORMATS (not imported here: `--help` stays light; a test checks)
FORMATS = ("coco", "yolo", "voc", "masks", "folders", "csv")
# Modules adding `data` subcommands, each with add_commands(data_subparsers) (by name, as
# flows/cli.py does: they import this module's helpers).
DATA_COMMAND_MODULES = ("flows.exclude_cli",)


def _prepare_code(root: Path) -> list[str]:
    """The stage's code deps: the importer modules, when the project holds the package."""
    folder = root / "visiongate" / "datasets"
    files = [folder / f for f in ("prepare.py", "validate.py", "validate_labels.py", "splits.py",
                                  "coco.py", "class_ids.py")]
    files += sorted((folder / "formats").glob("*.py"))
    return [p.relative_to(root).as_posix() for p in files if p.is_file()]


def dataset_name(name: str, what: str = "dataset") -> str:
    """name when it is a dataset name (data/prepared/NAME), else a one-line ConfigError."""
    if not NAME.fullmatch(name):
        raise ConfigError(f"{what} {name!r}: give a dataset name (letters, digits, '_' or '-'; "
                          "a folder under data/prepared), not a path")
    return name


def _inside(root: Path, path: Path, what: str) -> Path:
    """path made absolute (lexically: a project whose data/ or .cache/ links to another disk
    keeps working), when it lies in the project; else a one-line ConfigError."""
    resolved = Path(os.path.abspath(path))
    if not resolved.is_relative_to(root):
        raise ConfigError(f"{what} {str(path)!r} is outside the project {root}: give a path "
                          "inside it")
    return resolved


def _params_file(root: Path, params: str) -> str:
    """--params as it goes into the stage command: a relative path inside the project."""
    if not RELATIVE.fullmatch(params):
        raise ConfigError(f"--params {params!r}: give a file inside the project as a relative "
                          "path of letters, digits and '_' '-' '.' '/' (no '..')")
    _inside(root, root / params, "--params")
    return params


def _copy_source(src: Path, raw: Path, root: Path, force: bool) -> tuple[bool, Path | None]:
    """Copy src's regular files to data/raw/NAME unless the same bytes are already there:
    (whether raw is a new copy, the copy it replaced — kept aside until the import ends)."""
    from visiongate import versioning
    from visiongate.datasets import rawcopy

    raw_rel = raw.relative_to(root).as_posix()
    if versioning.restore(root, raw_rel):
        if rawcopy.matches(src, raw):
            print(f"{raw_rel}: same bytes as {src}, kept")
            return False, None
        if not force:
            raise DataError(f"dataset {raw.name!r} was imported from a different source "
                            f"({raw_rel} differs from {src}); pass --force to replace it")
    tmp, skipped = rawcopy.copy_regular(src, raw.parent)
    try:
        backup = rawcopy.swap_in(tmp, raw)
    finally:
        rawcopy.remove(tmp)  # left only when the swap failed
    for issue in skipped:
        print(f"{issue.kind:<14} {issue.file}: {issue.detail} [{issue.action}]")
    print(f"copied {src} -> {raw_rel}" + (f" ({len(skipped)} entries left out: see "
                                          "quarantine.csv)" if skipped else ""))
    return True, backup


@contextmanager
def _undone_on_failure(root: Path, raw: Path):
    """A failed import leaves the project as it was: dvc.yaml, dvc.lock, NAME.dvc and DVC's
    .gitignore restored, a new raw copy removed and a replaced one put back."""
    from visiongate.datasets import rawcopy

    files = [root / "dvc.yaml", root / "dvc.lock", raw.with_name(f"{raw.name}.dvc"),
             raw.parent / ".gitignore"]
    saved = {path: path.read_bytes() if path.is_file() else None for path in files}
    copy = {"new": False, "backup": None}
    try:
        yield copy
    except BaseException:
        changed = [p for p, data in saved.items()
                   if data != (p.read_bytes() if p.is_file() else None)]
        if copy["new"]:
            rawcopy.remove(raw)
            if copy["backup"] is not None:
                copy["backup"].rename(raw)
        for path in changed:
            if saved[path] is None:
                path.unlink()
            else:
                path.write_bytes(saved[path])
        if copy["new"] or changed:
            print(f"import of {raw.name!r} undone: dvc.yaml, dvc.lock and data/raw as before",
                  file=sys.stderr)
        raise
    if copy["backup"] is not None:
        rawcopy.remove(copy["backup"])


def _params_entry(root: Path, params: str) -> list:
    """The stage's params dep: `validation` of the params file, when it has that section."""
    path = root / params
    raw = yaml.safe_load(path.read_text()) if path.is_file() else None
    if not isinstance(raw, dict) or "validation" not in raw:
        print(f"note: {params} has no `validation` section; the defaults apply")
        return []
    return ["validation"] if params == "params.yaml" else [{params: ["validation"]}]


def _class_reference(root: Path, name: str) -> str | None:
    """data/classes/NAME.txt, (re)written from the class list now in use when NAME was
    imported before: the ids its classes keep (visiongate/datasets/class_ids.py)."""
    from visiongate.datasets import safe_load

    info, ref = root / "data" / "prepared" / name / "info.json", f"data/classes/{name}.txt"
    loaded = safe_load.load_json(info) if info.is_file() else None  # bounded, like any input
    classes = loaded.get("classes") if isinstance(loaded, dict) else None
    if isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes):
        (root / ref).parent.mkdir(parents=True, exist_ok=True)
        (root / ref).write_text("".join(f"{c}\n" for c in classes))
    return ref if (root / ref).is_file() else None


def _import(args: argparse.Namespace) -> int:
    from visiongate import versioning
    from visiongate.datasets.prepare import INFO, format_summary
    from visiongate.datasets.splits import parse_ratios

    root, src = Path(args.root).resolve(), Path(args.src).resolve()
    name = dataset_name(args.name, "--name")
    params = _params_file(root, args.params)
    if not src.is_dir():
        raise NotFound(f"no source folder at {src}")
    if not (root / ".dvc").is_dir():
        raise NotFound(f"{root} is not a DVC project (no .dvc/): run `dvc init` there")
    ratios = parse_ratios(args.split)
    raw = root / "data" / "raw" / name
    if raw == src or raw in src.parents or src in raw.parents:
        raise DataError(f"source {src} overlaps {raw}: import from a folder outside data/raw")
    raw_rel, out_rel, stage = f"data/raw/{name}", f"data/prepared/{name}", f"prepare-{name}"
    outs = [f"{out_rel}/{s}" for s in SPLIT_NAMES] + [f"{out_rel}/quarantine.csv",
                                                       f"{out_rel}/{INFO}"]
    versioning.check_stage(root, stage, [raw_rel, *outs])  # before anything is written
    split_arg = ",".join(f"{s}={ratios[s]:g}" for s in SPLIT_NAMES)
    classes = _class_reference(root, name)
    cmd = shlex.join(["python", "-m", "visiongate.datasets.prepare", "--format", args.format,
                      "--src", raw_rel, "--out", out_rel, "--split", split_arg,
                      "--seed", str(args.seed), *(["--classes", classes] if classes else []),
                      "--params", params])
    with _undone_on_failure(root, raw) as copy:
        copy["new"], copy["backup"] = _copy_source(src, raw, root, args.force)
        versioning.track(root, raw_rel)
        versioning.set_stage(root, stage, cmd, [raw_rel, *([classes] if classes else []),
                                                *_prepare_code(root)], outs,
                             _params_entry(root, params))
        md5s = versioning.reproduce(root, name)
    import json

    info = json.loads((root / out_rel / INFO).read_text())
    print(format_summary(info, Path(out_rel)))
    print("dvc.lock pins " + ", ".join(f"{s} {m}" for s, m in md5s.items()))
    pushed = versioning.push(root, name)  # workers `dvc pull` it (README "Beyond one machine")
    if pushed:
        print(f"pushed to DVC remote {pushed[0]!r}: {pushed[1]} file(s) new there")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from visiongate import versioning
    from visiongate.datasets.exclude import read_list
    from visiongate.datasets.validate import check_prepared, read_quarantine

    root = Path(args.root).resolve()
    prepared = Project(root).prepared(dataset_name(args.name))
    md5s = versioning.reproduce(root, args.name)  # re-validates when data, code or params moved
    summary = check_prepared(prepared)
    lines = read_quarantine(prepared / "quarantine.csv")
    for issue in lines[:args.show]:
        print(f"{issue.kind:<20} {issue.file}: {issue.detail} [{issue.action}]")
    if len(lines) > args.show:
        print(f"... {len(lines) - args.show} more in {prepared / 'quarantine.csv'}")
    kinds = ", ".join(f"{k} {n}" for k, n in summary.by_kind.items()) or "none"
    print(f"{args.name}: {summary.images} images, {summary.quarantined} quarantined "
          f"({summary.share:.1%}); quarantine lines by kind: {kinds}")
    excluded = read_list(Project(root).exclude_list(args.name))
    if excluded:  # the user's decision, not bad data: never counted as quarantined
        print(f"{len(excluded)} item(s) excluded from training by data/exclude/{args.name}.csv "
              f"(kind excluded_suspect; `visiongate data exclude {args.name} --list`)")
    print("splits pinned: " + ", ".join(f"{s} {m}" for s, m in md5s.items()))
    return 0


def _stats(args: argparse.Namespace) -> int:
    from visiongate.datasets.stats import dataset_stats, format_stats, write_stat_plots

    root = Path(args.root).resolve()
    prepared = Project(root).prepared(dataset_name(args.name))
    if not prepared.is_dir():
        raise NotFound(f"no dataset at {prepared}: `visiongate data import` it or "
                       "run `dvc repro`")
    stats = dataset_stats(prepared)
    print(format_stats(stats))
    out = _inside(root, Path(args.out), "--out") if args.out else Project(root).stats(args.name)
    for path in write_stat_plots(stats, out):
        print(f"wrote {path}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `visiongate data import|validate|stats`."""
    data = sub.add_parser("data", help="import, validate and describe datasets")
    commands = data.add_subparsers(dest="data_command", required=True)

    imp = commands.add_parser("import", help=(
        "copy a dataset into data/raw/NAME (DVC-tracked), validate it and write the canonical "
        "splits to data/prepared/NAME through a DVC stage"))
    imp.add_argument("src", help="source folder (never modified)")
    imp.add_argument("--format", required=True, choices=FORMATS)
    imp.add_argument("--name", required=True, help="dataset name: data/prepared/NAME")
    imp.add_argument("--split", default="train=0.7,val=0.15,test=0.15", help=(
        "shares for the splits the source lacks (its own splits are kept)"))
    imp.add_argument("--seed", type=int, default=0, help="split seed")
    imp.add_argument("--force", action="store_true", help="replace NAME imported from elsewhere")
    imp.set_defaults(func=_import)

    val = commands.add_parser("validate", help=(
        "bring NAME's prepare stage up to date, check its splits, print its quarantine report"))
    val.add_argument("name")
    val.add_argument("--show", type=int, default=20, help="quarantine lines to print")
    val.set_defaults(func=_validate)

    stats = commands.add_parser("stats", help=(
        "per split: images, objects per class, empty images, COCO size classes; two plots "
        "(image-label datasets: images per class, one plot)"))
    stats.add_argument("name")
    stats.add_argument("--out", help="folder for the plots (default .cache/stats/NAME)")
    stats.set_defaults(func=_stats)

    for parser in (imp, val, stats):
        parser.add_argument("--root", default=".", help="project root (dvc.yaml, params.yaml)")
        parser.add_argument("--params", default="params.yaml",
                            help="params file, relative to --root")
    for module in DATA_COMMAND_MODULES:
        importlib.import_module(module).add_commands(commands)
