"""`visiongate` command line.

Exit codes: 0 success · 1 error (a `visiongate.errors.VisiongateError`, or an unreachable
MLflow server: one line) · 2 usage · 3 the flow completed but a gate refused at least one
candidate (the champion was kept) · 4 another retrain of the same dataset is running (this
one did nothing). Any other exception is a bug and propagates with its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys

from visiongate.errors import RetrainBusy, VisiongateError

GATE_REFUSED = 3
BUSY = 4

# Modules that add their own subcommands: each has add_commands(subparsers).
COMMAND_MODULES = ("flows.data_cli", "flows.models_cli", "flows.augment_cli", "flows.stack_cli",
                   "flows.explain_cli")


def _retrain(args: argparse.Namespace) -> int:
    from visiongate.outcomes import exit_code

    quick = None if args.force else _nothing_changed(args)
    if quick is not None:
        return 0
    from flows.retrain import retrain

    return exit_code(retrain(args.root, args.params, args.dataset, args.force), GATE_REFUSED)


def _nothing_changed(args: argparse.Namespace) -> list | None:
    """The "nothing changed" outcomes, decided and printed before Prefect and MLflow are
    imported (visiongate.nochange); None: the flow runs and decides."""

    from visiongate import nochange
    from visiongate.config import load_params
    from visiongate.outcomes import summary
    from visiongate.paths import Project

    try:
        project = Project.at(args.root)
        params = load_params(project.root / args.params, deep=False, root=project.root)
    except VisiongateError:  # the flow reports it (or what is wrong instead), as ever
        return None
    if args.dataset:
        params = params.model_copy(update={"dataset": args.dataset})
    store = nochange.own_store(project, params)
    outcomes = nochange.check(project, params, store) if store else None
    if outcomes is not None:
        print(summary(outcomes, store))
        print("(decided before Prefect started: no flow run was recorded; --force retrains)")
    return outcomes


def _json_metrics(metrics: dict[str, float]) -> dict[str, float | None]:
    """NaN (undefined: no such ground-truth objects) is written as JSON null."""
    return {k: None if v != v else v for k, v in metrics.items()}


def _evaluate_coco(args: argparse.Namespace) -> int:
    import json

    from visiongate.metrics import evaluate_coco_files

    print(json.dumps(_json_metrics(evaluate_coco_files(args.gt, args.pred, args.iou_type)),
                     indent=2))
    return 0


def _evaluate_model(args: argparse.Namespace) -> int:
    """Score a registered version on a dataset's DVC-pinned split."""
    import json
    from pathlib import Path

    from visiongate import registry, tracking, versioning
    from visiongate.config import load_params
    from visiongate.evaluate import evaluate
    from visiongate.paths import Project

    root = Path(args.root).resolve()
    params = load_params(root / args.params)
    dataset = args.dataset or params.dataset
    uri = tracking.tracking_uri(root, params.mlflow)
    version = registry.resolve(uri, args.model)
    checkpoint = registry.checkout(uri, version, Project(root).champions)
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON
        md5s = versioning.reproduce(root, dataset)
    from visiongate.datasets.crops import model_data
    from visiongate.models.meta import CheckpointMeta

    project, view = Project(root), CheckpointMeta.read(checkpoint).config.get("view", "image")
    data = model_data(project.prepared(dataset), project.views, view)  # the view it trained on
    metrics = evaluate(checkpoint, data / args.split)
    print(json.dumps({"model": f"{version.name}/{version.version}", "dataset": dataset,
                      "split": args.split, "data_md5": md5s[args.split],
                      "metrics": _json_metrics(metrics)}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visiongate", description=(
        "Keep vision models fresh: DVC-pinned data → train → IoU gates → MLflow champion."))
    sub = parser.add_subparsers(dest="command", required=True)
    retrain = sub.add_parser("retrain", help="run the retrain flow (data → train → gate → promote)")
    retrain.add_argument("--root", default=".", help="project root holding params.yaml and dvc.yaml")
    retrain.add_argument("--params", default="params.yaml", help="params file, relative to --root")
    retrain.add_argument("--dataset", help=(
        "dataset under data/prepared (imported with `visiongate data import`); default: "
        "params.yaml's. Models are registered as <dataset>-detect / <dataset>-segment"))
    retrain.add_argument("--force", action="store_true", help=(
        "retrain even when data, params and code equal those of a registered version"))
    retrain.set_defaults(func=_retrain)
    evaluate = sub.add_parser("evaluate-coco", help=(
        "score a COCO results file against COCO ground truth; metrics as JSON on stdout"))
    evaluate.add_argument("gt", help="COCO ground-truth JSON (images, annotations, categories)")
    evaluate.add_argument("pred", help="COCO results JSON: [{image_id, category_id, "
                          "bbox|segmentation, score}, ...]")
    evaluate.add_argument("--iou-type", choices=("bbox", "segm"), default="bbox",
                          help="box or mask IoU (default: bbox)")
    evaluate.set_defaults(func=_evaluate_coco)
    model_eval = sub.add_parser("evaluate", help=(
        "score a registered model on a dataset's DVC-pinned split; metrics as JSON on stdout"))
    model_eval.add_argument("--model", required=True, help=(
        "models:/NAME@ALIAS or models:/NAME/VERSION, e.g. models:/shapes-detect@champion"))
    model_eval.add_argument("--dataset", help="dataset under data/prepared (default: params.yaml's)")
    model_eval.add_argument("--split", default="test", choices=("train", "val", "test"))
    model_eval.add_argument("--root", default=".", help="project root holding params.yaml and dvc.yaml")
    model_eval.add_argument("--params", default="params.yaml", help="params file, relative to --root")
    model_eval.set_defaults(func=_evaluate_model)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)
    return parser


def use_local_stack(root: str) -> None:
    """After `visiongate up`, commands use its servers: flows report to its Prefect server
    (not a temporary one; set before prefect is first imported, which reads it once), and
    MLflow calls go through its tracking server, which serves this project's own store
    (opening the sqlite store in-process costs ~1.7 s of schema checks per command)."""
    import os
    from pathlib import Path

    from visiongate.stack import prefect_api_url, running_url

    if "PREFECT_API_URL" not in os.environ and "prefect" not in sys.modules:
        url = prefect_api_url(Path(root))
        if url:
            os.environ["PREFECT_API_URL"] = url
    if "MLFLOW_TRACKING_URI" not in os.environ:
        url = running_url(Path(root), "mlflow")
        if url:
            os.environ["MLFLOW_TRACKING_URI"] = url


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_local_stack(getattr(args, "root", "."))
    # Only the error family is the user's to fix and gets one line; anything else (a plain
    # ValueError or RuntimeError from numpy or torch) is a bug and keeps its traceback.
    try:
        return args.func(args)
    except RetrainBusy as err:
        print(f"visiongate: busy: {err}", file=sys.stderr)
        return BUSY
    except VisiongateError as err:
        print(f"visiongate: error: {err}", file=sys.stderr)
        return 1
    except Exception as err:
        unreachable = _unreachable_tracking_server(err)
        if unreachable is None:
            raise
        print(f"visiongate: error: MLflow tracking server {unreachable[0]} unreachable: "
              f"{unreachable[1]}", file=sys.stderr)
        return 1


def _unreachable_tracking_server(err: Exception) -> tuple[str, str] | None:
    """(server URL, why) when `err` is MLflow's "API request to <url> failed" because the
    server did not answer (refused, reset, unknown host, timed out); else None. Its
    I/O tasks have retried by then; the message names the server instead of a traceback."""
    import re

    text = " ".join(str(err).split())
    url = re.match(r"API request to (https?://\S+?)/(?:ajax-)?api/\S* failed with "
                   r"(?:timeout )?exception", text)
    why = re.search(r"\[Errno -?\d+\][^'\")]*|Connection (?:reset|aborted)[^'\")]*|timed out",
                    text)
    return (url[1], why[0].strip()) if url and why else None


if __name__ == "__main__":
    raise SystemExit(main())
