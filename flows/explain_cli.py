"""`visiongate explain`: what a registered model looked at, image by image (offline).

    visiongate explain --model models:/shapes-detect@champion IMAGES... --out DIR [--method M]
"""

from __future__ import annotations

import argparse
from pathlib import Path

# = visiongate.explain.METHODS (not imported here: `--help` stays light; a test checks)
METHODS = ("eigencam", "gradcam", "gradcam++", "layercam")


def _explain(args: argparse.Namespace) -> int:
    from visiongate import registry, tracking
    from visiongate.config import load_params
    from visiongate.datasets.safe_load import pixel_limit
    from visiongate.errors import NotFound
    from visiongate.heatmap_views import explain_images
    from visiongate.paths import Project

    root = Path(args.root).resolve()
    params = load_params(root / args.params)
    uri = tracking.tracking_uri(root, params.mlflow)
    version = registry.resolve(uri, args.model)
    checkpoint = registry.checkout(uri, version, Project(root).champions)
    with pixel_limit(params.validation.max_pixels):  # a bigger image is skipped, not decoded
        written, skipped = explain_images(checkpoint, [Path(p) for p in args.images],
                                          Path(args.out), args.method)
    for file, why in skipped:
        print(f"skipped {file}: {why}")
    if not written:
        raise NotFound("no readable image among the inputs: nothing explained")
    print(f"{version.name} v{version.version}: {len(written)} image(s) explained, "
          f"{len(skipped)} skipped -> {args.out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    explain = sub.add_parser("explain", help=(
        "heatmaps of what a registered model looked at: per image its predictions beside "
        "the heatmap (PNG) and the heatmap alone (16-bit PNG)"))
    explain.add_argument("images", nargs="+", help="image files or folders of images")
    explain.add_argument("--model", required=True, help=(
        "models:/NAME@ALIAS or models:/NAME/VERSION, e.g. models:/shapes-detect@champion"))
    explain.add_argument("--out", required=True, help="folder for the PNGs")
    explain.add_argument("--method", choices=METHODS, help=(
        "default: the family's own (layercam for ultralytics detectors, gradcam otherwise)"))
    explain.add_argument("--root", default=".", help="project root holding params.yaml")
    explain.add_argument("--params", default="params.yaml", help="params file, relative to --root")
    explain.set_defaults(func=_explain)
