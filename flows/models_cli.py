"""`visiongate models list`, `promote`, `rollback`, `predict`, `serve`: the registry by hand
(and `serve` without --model: the deployments, flows/schedule.py).

Each command reads the MLflow store from params.yaml under --root (default: the
current folder), like `visiongate evaluate`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import NoReturn

from visiongate.errors import ConfigError


def _uri(args: argparse.Namespace) -> str:
    from visiongate import tracking
    from visiongate.config import load_params

    root = Path(args.root).resolve()
    return tracking.tracking_uri(root, load_params(root / args.params).mlflow)


def _list(args: argparse.Namespace) -> int:
    from visiongate import registry

    found = registry.list_models(_uri(args), args.name)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print("no registered models")
    for model in found:
        print(model["name"])
        for v in model["versions"]:
            metrics = "  ".join(f"{k}={x:.3f}" for k, x in v["metrics"].items()) or "-"
            print(f"  v{v['version']:<4} {', '.join(v['aliases']) or '-':<30} {v['created']}  "
                  f"gate={v['gate']:<5}  {metrics}")
    return 0


def _alias_lock(uri: str, name: str):
    """Through a tracking server, the lock every writer shares (tasks/registry.py); a sqlite
    store's own lock is taken by visiongate.moves (and Prefect is not imported)."""
    if uri.startswith("sqlite:"):
        return contextlib.nullcontext()
    import flows  # noqa: F401  (Prefect environment defaults before prefect is imported)
    from tasks.registry import shared_alias_lock

    return shared_alias_lock(uri, name)


def _promote(args: argparse.Namespace) -> int:
    from visiongate import moves, registry

    uri = _uri(args)
    with _alias_lock(uri, args.name):
        move = moves.promote(uri, args.name, args.version, args.reason)
    if move.replaced == move.version:
        print(f"{args.name} v{args.version} is already champion; nothing moved")
        return 0
    gate = registry.get(uri, args.name, args.version).tags.get("gate.passed", "unknown")
    if gate != "true":
        print(f"note: v{args.version} did not pass its gate (gate.passed={gate}); "
              "promoted by explicit override", file=sys.stderr)
    was = f"; v{move.replaced} is previous-champion" if move.replaced else ""
    print(f"{args.name} v{move.version} is champion{was} ({move.by}, {move.at})")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from visiongate import moves

    uri = _uri(args)
    with _alias_lock(uri, args.name):
        move = moves.rollback(uri, args.name, args.reason)
    left = f"; v{move.replaced} is no longer champion" if move.replaced else ""
    print(f"{args.name} rolled back: v{move.version} is champion again{left} "
          f"({move.by}, {move.at})")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from flows.predict import predict

    result = predict(args.model, args.images, args.out, args.root, args.params, args.min_score)
    for file, reason in result["skipped"]:
        print(f"skipped {file}: {reason}", file=sys.stderr)
    print(f"{result['predicted']} images, {result['detections']} predictions, "
          f"{len(result['skipped'])} skipped -> {result['out_dir']}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    """Without --model: the deployments (flows/schedule.py) on the Prefect server.
    With --model: MLflow's scoring server on 127.0.0.1 behind visiongate.rest's guard."""
    if args.model:
        return _serve_model(args)
    if not os.environ.get("PREFECT_API_URL"):
        raise ConfigError("no Prefect server to serve the deployments on: run `make up` "
                          "(visiongate up) first, or set PREFECT_API_URL")
    from flows.schedule import serve_deployments

    serve_deployments(Path(args.root), args.params)
    return 0


def _deploy(args: argparse.Namespace) -> int:
    """The deployments registered with a work pool, for `prefect worker start` to run."""
    if not os.environ.get("PREFECT_API_URL"):
        raise ConfigError("no Prefect server to register the deployments with: run `make up` "
                          "(visiongate up) first, or set PREFECT_API_URL")
    from flows.schedule import deploy_to_pool

    names = deploy_to_pool(Path(args.root), args.pool, args.params)
    print(f"registered with work pool {args.pool!r}: {', '.join(names)}\n"
          f"run them with: prefect worker start --pool {args.pool}")
    return 0


def _serve_model(args: argparse.Namespace) -> NoReturn:
    """Become uvicorn on visiongate.rest:create_app (what `mlflow models serve --env-manager
    local` runs, plus the body limit and clean errors). The checked local copy of the version
    (registry.checkout_model), tracking URI and params.yaml's
    `serve:` limits (VISIONGATE_SERVE_MAX_* already set win) travel in the environment."""
    from visiongate import registry, rest, tracking
    from visiongate.config import load_params
    from visiongate.paths import Project

    root = Path(args.root).resolve()
    params = load_params(root / args.params)
    uri = tracking.tracking_uri(root, params.mlflow)
    version = registry.resolve(uri, args.model)  # a clear error before the server starts
    # the server loads this checked local copy (its MLmodel is visiongate's), not the URI
    model_dir = registry.checkout_model(uri, version, Project(root).champions)
    env = {**rest.environment(params.serve), **os.environ, "MLFLOW_TRACKING_URI": uri,
           rest.MODEL_ENV: str(model_dir)}
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    rest.limits(env)  # a bad VISIONGATE_SERVE_* is a clear error here, not in the server
    # uvicorn replaces this process: a SIGTERM to the pid a user (or systemd, or a container
    # runtime) knows stops the server itself, and nothing this process imported stays resident
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "uvicorn", "--factory",
                               "visiongate.rest:create_app", "--host", "127.0.0.1",
                               "--port", str(args.port), "--workers", str(args.workers)], env)


def _store_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--root", default=".", help="project root holding params.yaml")
    parser.add_argument("--params", default="params.yaml", help="params file, relative to --root")
    return parser


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this module's subcommands on the `visiongate` parser."""
    models = sub.add_parser("models", help="registered models").add_subparsers(
        dest="models_command", required=True)
    listing = _store_args(models.add_parser("list", help=(
        "registered models: versions, aliases, gate verdict, headline test metrics")))
    listing.add_argument("--name", help="only this registered model")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=_list)

    promote = _store_args(sub.add_parser("promote", help=(
        "make VERSION champion by hand (recorded: who, when, why); the old one becomes "
        "previous-champion")))
    promote.add_argument("name", help="registered model, e.g. shapes-detect")
    promote.add_argument("version", help="version number")
    promote.add_argument("--reason", required=True, help="why (recorded on the version)")
    promote.set_defaults(func=_promote)

    rollback = _store_args(sub.add_parser("rollback", help=(
        "make previous-champion champion again; the rolled-back version loses champion")))
    rollback.add_argument("name", help="registered model, e.g. shapes-detect")
    rollback.add_argument("--reason", default="manual rollback", help="why (recorded)")
    rollback.set_defaults(func=_rollback)

    predict = _store_args(sub.add_parser("predict", help=(
        "batch prediction: COCO predictions.json, overlays/, skipped.csv in --out")))
    predict.add_argument("--model", required=True,
                         help="models:/NAME@ALIAS or models:/NAME/VERSION")
    predict.add_argument("images", help="folder of images (searched recursively)")
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument("--min-score", type=float, help=(
        "drop detections scored below this (default 0.25); classifiers: the top-1 class "
        "needs this probability (default: classify.min_score), multi-label: replaces the "
        "per-class thresholds"))
    predict.set_defaults(func=_predict)

    serve = _store_args(sub.add_parser("serve", help=(
        "run the deployments: scheduled retrain, weekly champion check, prediction on "
        "demand, data watcher (needs `make up`); with --model: serve that model over REST "
        "on 127.0.0.1 (MLflow's scoring server; limits in params.yaml `serve:`)")))
    serve.add_argument("--model", help="models:/NAME@ALIAS or models:/NAME/VERSION to serve over REST")
    serve.add_argument("--port", type=int, default=5001)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=_serve)

    deploy = _store_args(sub.add_parser("deploy", help=(
        "register the same deployments with a Prefect work pool (created as a `process` "
        "pool if missing) instead of serving them; `prefect worker start --pool NAME` runs "
        "them wherever visiongate is installed and the project is at the same path")))
    deploy.add_argument("--pool", required=True, help="work pool name")
    deploy.set_defaults(func=_deploy)
