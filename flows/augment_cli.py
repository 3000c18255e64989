"""`visiongate augment preview`: a grid PNG of augmented training samples, boxes, masks or
class names drawn, to check params.yaml's `augment:` list before training on it."""

from __future__ import annotations

import argparse
from pathlib import Path

from visiongate.errors import NotFound


def _preview(args: argparse.Namespace) -> int:
    from visiongate.augment import preview_grid
    from visiongate.config import load_params
    from visiongate.paths import Project

    root = Path(args.root).resolve()
    params = load_params(root / args.params, deep=True)  # builds the augment lists
    dataset = args.dataset or params.dataset
    cfg = getattr(params, args.task)
    split_dir = Project(root).split(dataset, args.split)
    if not (split_dir / "annotations.json").is_file():
        raise NotFound(f"no {args.split} split at {split_dir} (run `visiongate retrain` "
                       "or `dvc repro` to prepare the dataset first)")
    out = Path(args.out) if args.out else Project(root).cache / "augment" / f"{dataset}-{args.task}.png"
    print(preview_grid(cfg, split_dir, out, args.n))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `augment preview` on the `visiongate` parser."""
    augment = sub.add_parser("augment", help="training augmentation (params.yaml `augment:`)")
    actions = augment.add_subparsers(dest="augment_command", required=True)
    preview = actions.add_parser("preview", help=(
        "write a grid PNG of augmented samples with their boxes / masks drawn"))
    preview.add_argument("--dataset", help="dataset under data/prepared (default: params.yaml's)")
    preview.add_argument("--task", choices=("detect", "segment", "classify"), default="detect",
                         help="whose augment list and family to preview (default: detect)")
    preview.add_argument("-n", type=int, default=16, help="number of samples (default: 16)")
    preview.add_argument("--split", default="train", choices=("train", "val", "test"))
    preview.add_argument("--out", help="PNG to write (default: .cache/augment/<dataset>-<task>.png)")
    preview.add_argument("--root", default=".", help="project root holding params.yaml")
    preview.add_argument("--params", default="params.yaml", help="params file, relative to --root")
    preview.set_defaults(func=_preview)
