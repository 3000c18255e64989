"""`visiongate up` / `visiongate down`: the local Prefect and MLflow servers (`make up`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from visiongate import stack
from visiongate.paths import Project


def _project(args: argparse.Namespace):
    from visiongate.config import load_params

    root = Path(args.root).resolve()
    return root, load_params(root / args.params, deep=False)


def _up(args: argparse.Namespace) -> int:
    from visiongate.tracking import tracking_uri

    root, params = _project(args)
    state_dir = Project(root).stack
    artifacts = Path(params.mlflow.artifact_root)
    artifacts = artifacts if artifacts.is_absolute() else root / artifacts
    artifacts.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(root, params.mlflow)
    for name, server in stack.servers(params.stack).items():
        cmd = stack.command(server, root, uri, artifacts)
        pid = stack.start(server, cmd, state_dir, stack.environment(root))
        print(f"{name:8s} {server.url}  (pid {pid}, log {state_dir / (name + '.log')})")
    prefect = stack.servers(params.stack)["prefect"]
    print(f"\nPrefect UI: {prefect.url}    MLflow UI: {stack.servers(params.stack)['mlflow'].url}\n"
          "visiongate commands in this project now report to this Prefect server; "
          "other Prefect clients need\n"
          f"  export PREFECT_API_URL={prefect.url}/api\n"
          "Next: `visiongate serve` registers the schedules; `make down` stops both servers.")
    return 0


def _down(args: argparse.Namespace) -> int:
    state_dir = Project.at(args.root).stack
    for name in ("prefect", "mlflow"):
        state = stack.read_state(state_dir, name)
        if stack.stop(state_dir, name):
            print(f"{name}: stopped")
        elif state:  # its pid is gone or now another process: that one is left alone
            print(f"{name}: was not running (removed a stale {name}.json for pid "
                  f"{state.get('pid')}; nothing was signalled)")
        else:
            print(f"{name}: was not running")
    return 0


def add_commands(sub) -> None:
    for command, func, text in (
            ("up", _up, "start the Prefect server and the MLflow UI server on 127.0.0.1 "
                        "(state in .prefect/ and mlruns/; ports in params.yaml `stack:`)"),
            ("down", _down, "stop the servers `visiongate up` started")):
        parser = sub.add_parser(command, help=text)
        parser.add_argument("--root", default=".", help="project root holding params.yaml")
        parser.add_argument("--params", default="params.yaml", help="params file, relative to --root")
        parser.set_defaults(func=func)
