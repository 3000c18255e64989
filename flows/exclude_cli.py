"""`visiongate data review|exclude`: the label mistakes a retrain suspects, and the ones the
user confirmed, left out of training — the data itself is never edited.

    visiongate data review shapes [--task detect] [--top 20] [--run RUN_ID]
    visiongate data exclude shapes --latest --task detect --top 5     # or --run RUN_ID
    visiongate data exclude shapes --item train/images/000012.png#57 --reason "a square"
    visiongate data exclude shapes --list
    visiongate data exclude shapes --clear train/images/000012.png#57

The list is data/exclude/NAME.csv, DVC-tracked (`dvc add`: its own .dvc file and md5),
and its md5 is part of each model's lineage: editing it makes the next retrain train.
"""

from __future__ import annotations

import argparse
import re
import shlex
import tempfile
from pathlib import Path

from flows.data_cli import _params_file, dataset_name
from visiongate.errors import ConfigError, DataError, NotFound
from visiongate.paths import Project, registry_name

TASKS = ("detect", "segment", "classify")
RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_TOP = 10_000


def _where(args: argparse.Namespace) -> str:
    """--root/--params as typed, for the commands a hint prints."""
    extra = [] if args.root == "." else ["--root", args.root]
    extra += [] if args.params == "params.yaml" else ["--params", args.params]
    return "".join(f" {shlex.quote(a)}" for a in extra)


def _tracking(args: argparse.Namespace):
    """(project root, params, tracking URI) of the project the command names."""
    from visiongate import tracking
    from visiongate.config import load_params

    root = Path(args.root).resolve()
    params = load_params(root / _params_file(root, args.params))
    return root, params, tracking.tracking_uri(root, params.mlflow)


def _run_model(uri: str, name: str, run_id: str) -> str:
    """The model (NAME-TASK) whose retrain run `run_id` is; DataError for another dataset's."""
    from visiongate import tracking

    if not RUN_ID.fullmatch(run_id):
        raise ConfigError(f"--run {run_id[:80]!r}: expected an MLflow run id (letters, digits)")
    model = tracking.run_tags(uri, run_id).get("model_name", "")
    if model not in {registry_name(name, task) for task in TASKS}:
        raise DataError(f"run {run_id} is a run of {model[:80] or 'no model'!r}, not of "
                        f"dataset {name!r}")
    return model


def _latest_runs(args: argparse.Namespace, params, uri: str) -> list[tuple[str, str | None]]:
    """[(model, newest run id that logged suspects, or None)] for --task or each enabled task."""
    from visiongate import review, tracking

    tasks = [args.task] if args.task else list(params.model_tasks())
    if not tasks:
        raise ConfigError("no model task is enabled in the params file: give --task")
    models = [registry_name(args.name, task) for task in tasks]
    return [(model, tracking.latest_run_with_artifact(uri, params.mlflow.experiment, model,
                                                      review.ARTIFACT)) for model in models]


def _suspects(uri: str, run_id: str):
    from visiongate import review, tracking

    with tempfile.TemporaryDirectory(prefix="visiongate-suspects-") as tmp:
        path = tracking.download_artifact(uri, run_id, review.ARTIFACT, Path(tmp),
                                          review.MAX_BYTES)
        return review.read_suspects(path)


def _none_yet(name: str, models: list[str]) -> NotFound:
    from visiongate import review

    return NotFound(f"no retrain run of {', '.join(models)} has logged {review.ARTIFACT} yet: "
                    f"run `visiongate retrain --dataset {name}` first")


def _review(args: argparse.Namespace) -> int:
    from visiongate import review

    dataset_name(args.name)
    _, params, uri = _tracking(args)
    runs = [(_run_model(uri, args.name, args.run), args.run)] if args.run else \
        _latest_runs(args, params, uri)
    if all(run_id is None for _, run_id in runs):
        raise _none_yet(args.name, [model for model, _ in runs])
    for model, run_id in runs:
        if run_id is None:
            print(f"{model}: no run has logged {review.ARTIFACT} yet\n")
            continue
        suspects = _suspects(uri, run_id)
        shown = suspects[:args.top]
        flagged = sum(s.score < review.ISSUE_SCORE for s in suspects)
        print(f"{model} — run {run_id}: {len(suspects)} labels ranked by quality, {flagged} "
              f"below {review.ISSUE_SCORE} (likely mistakes); lowest = most suspect"
              + (f"; the top {len(shown)}:" if shown else ""))
        if shown:
            print(review.table(shown))
            print(f"exclude these {len(shown)} from training: visiongate data exclude "
                  f"{args.name} --run {run_id} --top {len(shown)}{_where(args)}")
            print(f"or one at a time: visiongate data exclude {args.name} --item "
                  f"{shlex.quote(shown[0].item)} --reason TEXT{_where(args)}")
        print()
    return 0


def _from_run(args: argparse.Namespace) -> list:
    """The --top most suspect rows of --run, or of the newest run of --task (--latest)."""
    from visiongate import review

    _, params, uri = _tracking(args)
    if args.run:
        _run_model(uri, args.name, args.run)
        run_id = args.run
    else:
        if not args.task and len(params.model_tasks()) > 1:
            raise ConfigError(f"--latest: give --task ({' | '.join(params.model_tasks())}): "
                              "each model has its own suspects")
        ((model, run_id),) = _latest_runs(args, params, uri)[:1]
        if run_id is None:
            raise _none_yet(args.name, [model])
    return review.exclusions(_suspects(uri, run_id), args.top, run_id)


def _show(path: Path, entries: list, md5: str | None) -> None:
    from visiongate.review import printable

    pinned = f"md5 {md5}, {path.name}.dvc" if md5 else "not DVC-tracked yet"
    print(f"{path}: {len(entries)} excluded item(s) ({pinned})")
    items = [printable(e.item, 100) for e in entries]
    width = max((len(i) for i in items), default=0)
    for item, e in zip(items, entries, strict=True):
        print(f"  {item.ljust(width)}  {printable(e.reason, 100)}")


def _edited(args: argparse.Namespace, project: Project, entries: list) -> tuple[list, str]:
    """(the list after the command, what changed in words)."""
    from visiongate.datasets import exclude

    if args.clear:
        return exclude.remove(entries, args.clear), f"removed {args.clear}"
    if args.item:
        if not args.reason:
            raise ConfigError("--item needs --reason: say why the label is wrong")
        added = [exclude.parse_item(args.item, args.reason)]
    else:
        added = _from_run(args)
    exclude.check_entries(project.prepared(args.name), added)
    new = exclude.dedupe(entries + added)
    listed = len(added) - (len(new) - len(entries))
    return new, f"added {len(new) - len(entries)}" + (f" ({listed} already listed)" if listed
                                                      else "")


def _exclude(args: argparse.Namespace) -> int:
    from visiongate import versioning
    from visiongate.datasets import exclude

    root = Path(args.root).resolve()
    project = Project(root)
    path = project.exclude_list(dataset_name(args.name))
    rel = path.relative_to(root).as_posix()
    if args.list:
        entries = exclude.read_list(path)
        _show(path, entries, versioning.tracked_md5(root, rel))
        return 0
    if (args.run or args.latest) and args.top is None:
        raise ConfigError("--run/--latest need --top N: how many of the most suspect rows")
    if not project.prepared(args.name).is_dir():
        raise NotFound(f"no dataset at {project.prepared(args.name)}: `visiongate data "
                       "import` it or run `dvc repro`")
    with project.holding_retrain_lock(args.name):  # a retrain reads the list once, unchanged
        entries = exclude.read_list(path)
        new, change = _edited(args, project, entries)
        before = path.read_bytes() if path.is_file() else None
        exclude.write_list(path, new)
        try:
            md5 = versioning.pin_file(root, rel)
        except BaseException:
            if before is None:
                path.unlink()
            else:
                path.write_bytes(before)
            raise
    print(f"{rel}: {change}; {len(new)} excluded item(s), DVC-tracked (md5 {md5}). "
          "The source data is not edited: the next retrain trains without them.")
    return 0


def _top(value: str) -> int:
    number = int(value)
    if not 1 <= number <= MAX_TOP:
        raise argparse.ArgumentTypeError(f"expected 1..{MAX_TOP}")
    return number


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register `visiongate data review|exclude` (commands: the `data` subparsers)."""
    review = commands.add_parser("review", help=(
        "print the label mistakes the latest retrain run suspects (its MLflow artifact "
        "suspects/suspects.csv), most suspect first"))
    review.add_argument("name")
    review.add_argument("--task", choices=TASKS, help="one model task (default: each enabled)")
    review.add_argument("--top", type=_top, default=20, help="rows to print (default 20)")
    review.add_argument("--run", help="this MLflow run instead of the latest")
    review.set_defaults(func=_review)

    exc = commands.add_parser("exclude", help=(
        "leave confirmed label mistakes out of training: data/exclude/NAME.csv (DVC-tracked, "
        "part of the lineage); the data itself is never edited"))
    exc.add_argument("name")
    what = exc.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", help="exclude the --top most suspect rows of this run")
    what.add_argument("--latest", action="store_true",
                      help="exclude the --top most suspect rows of the latest run of --task")
    what.add_argument("--item", help="SPLIT/FILE[#ANNOTATION], e.g. train/images/000012.png#57 "
                      "(no #: the whole image); train or val only")
    what.add_argument("--list", action="store_true", help="print the exclusion list")
    what.add_argument("--clear", metavar="ITEM", help="remove this entry from the list")
    exc.add_argument("--task", choices=TASKS, help="the model whose suspects --latest takes")
    exc.add_argument("--top", type=_top, help="how many of the most suspect rows")
    exc.add_argument("--reason", help="why the label is wrong (with --item)")
    exc.set_defaults(func=_exclude)
    for parser in (review, exc):
        parser.add_argument("--root", default=".", help="project root (dvc.yaml, params.yaml)")
        parser.add_argument("--params", default="params.yaml",
                            help="params file, relative to --root")
