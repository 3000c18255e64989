"""`visiongate` command line.

Exit codes: 0 success · 1 error · 2 usage · 3 the flow completed but a gate refused at
least one candidate (the champion was kept).
"""

from __future__ import annotations

import argparse
import sys

GATE_REFUSED = 3


def _retrain(args: argparse.Namespace) -> int:
    from flows.retrain import retrain

    outcomes = retrain(args.root, args.params)
    return 0 if all(o["verdict"]["passed"] for o in outcomes) else GATE_REFUSED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visiongate", description=(
        "Keep vision models fresh: DVC-pinned data → train → IoU gates → MLflow champion."))
    sub = parser.add_subparsers(dest="command", required=True)
    retrain = sub.add_parser("retrain", help="run the retrain flow (data → train → gate → promote)")
    retrain.add_argument("--root", default=".", help="project root holding params.yaml and dvc.yaml")
    retrain.add_argument("--params", default="params.yaml", help="params file, relative to --root")
    retrain.set_defaults(func=_retrain)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"visiongate: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
