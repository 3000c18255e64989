"""Are the heatmaps faithful? The pointing game and deletion AUC of each registered model's
heatmaps on its pinned test split, each beside a random baseline.

    python benchmarks/bench_explain.py --model models:/shapes-detect@champion \
        models:/shapes-segment@champion models:/shapes-classify@champion [--write]

Pointing game: a hit when the heatmap's maximum lies inside the truth — any ground-truth
box of the image (detectors: EigenCAM explains the image, not one box), the ground-truth
region of the class the heatmap explains (segmenters), the object's box inside its crop
(crop classifiers: the crop adds 10 % of margin around it). Random baseline: the share of
the image that truth covers (where a uniformly random maximum would land).

Deletion: the image's pixels are greyed out in order of the heatmap (10 % per step) and the
model's score for what it first predicted is followed (detector: the best score of a box
of the first top detection's class overlapping it by IoU ≥ 0.5; segmenter: the share of the
first predicted region still predicted; classifier: the probability of the first top
class). AUC of that curve, relative to the first score: lower is more faithful. Baseline:
the same with the pixels in a random order.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import machine, update_section  # noqa: E402
from visiongate import models, registry, tracking  # noqa: E402
from visiongate.config import load_params  # noqa: E402
from visiongate.datasets.coco import load_split, read_semantic_mask  # noqa: E402
from visiongate.datasets.crops import MARGIN, model_data  # noqa: E402
from visiongate.explain import explainer  # noqa: E402
from visiongate.models.samples import read_rgb  # noqa: E402
from visiongate.paths import Project  # noqa: E402

STEPS = np.linspace(0, 1, 11)
GREY = 128


def _truth(split, image: dict, meta, heat_target: str) -> np.ndarray:
    """(H, W) bool: where a pointing-game hit may land."""
    h, w = image["height"], image["width"]
    if meta.task == "segment":
        names = ("background", *meta.class_names)
        k = next((i for i, n in enumerate(names) if heat_target.endswith(f"region of {n}")), 0)
        return read_semantic_mask(split, image) == k if k else np.zeros((h, w), bool)
    if meta.task in ("classify", "multilabel"):  # the object inside its crop's margin
        inner = np.zeros((h, w), bool)
        mx, my = w * MARGIN / (1 + 2 * MARGIN), h * MARGIN / (1 + 2 * MARGIN)
        inner[int(my):max(int(my) + 1, round(h - my)), int(mx):max(int(mx) + 1, round(w - mx))] = True
        return inner
    truth = np.zeros((h, w), bool)
    for ann in split.annotations.get(image["id"], []):
        if ann.get("iscrowd"):
            continue
        x, y, bw, bh = ann["bbox"]
        truth[int(y):int(np.ceil(y + bh)), int(x):int(np.ceil(x + bw))] = True
    return truth


def _score(meta, first, now) -> float:
    if meta.task in ("classify", "multilabel"):
        return float(now[int(np.argmax(first))])
    if meta.task == "segment":
        labels, counts = np.unique(first[first > 0], return_counts=True)
        if not len(labels):
            return 0.0
        k = labels[counts.argmax()]
        return float(((now == k) & (first == k)).sum() / (first == k).sum())
    if not len(first["scores"]):
        return 0.0
    from torchvision.ops import box_iou
    import torch

    top = int(np.argmax(first["scores"]))
    same = now["labels"] == first["labels"][top]
    if not same.any():
        return 0.0
    iou = box_iou(torch.as_tensor(first["boxes"][top:top + 1], dtype=torch.float32),
                  torch.as_tensor(now["boxes"][same], dtype=torch.float32)).numpy()[0]
    return float(now["scores"][same][iou >= 0.5].max(initial=0.0))


def _deletion(predict, meta, rgb: np.ndarray, order: np.ndarray, tmp: Path) -> float:
    """Relative AUC of the score while pixels are greyed out in `order` (flat indices)."""
    paths = []
    for i, share in enumerate(STEPS):
        img = rgb.reshape(-1, 3).copy()
        img[order[:round(share * len(order))]] = GREY
        paths.append(tmp / f"{i}.png")
        Image.fromarray(img.reshape(rgb.shape)).save(paths[-1])
    preds = predict(paths)
    scores = np.array([_score(meta, preds[0], p) for p in preds])
    return float(np.trapezoid(scores, STEPS) / scores[0]) if scores[0] > 0 else float("nan")


def measure(checkpoint: Path, split_dir: Path, method: str | None = None, seed: int = 0) -> dict:
    meta, split = models.CheckpointMeta.read(checkpoint), load_split(split_dir)
    heat, predict = explainer(checkpoint, method), models.load(checkpoint)
    rng = np.random.default_rng(seed)
    hits, coverage, auc, auc_random, methods = [], [], [], [], {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for image in split.images:
            path = split.image_path(image)
            h = heat(path)
            methods[h.target.split(":")[0]] = methods.get(h.target.split(":")[0], 0) + 1
            truth = _truth(split, image, meta, h.target)
            if not truth.any():
                continue  # nothing to point at (no object, or background predicted)
            y, x = np.unravel_index(int(np.argmax(h.cam)), h.cam.shape)
            hits.append(bool(truth[y, x]))
            coverage.append(float(truth.mean()))
            rgb = read_rgb(path)
            auc.append(_deletion(predict, meta, rgb, np.argsort(-h.cam.ravel(), kind="stable"),
                                 Path(tmp)))
            auc_random.append(_deletion(predict, meta, rgb, rng.permutation(h.cam.size),
                                        Path(tmp)))
    method = ", ".join(f"{m} {n}" if len(methods) > 1 else m for m, n in methods.items())
    return {"family": meta.family, "task": meta.task, "images": len(hits), "method": method,
            "pointing": float(np.mean(hits)) if hits else float("nan"),
            "baseline": float(np.mean(coverage)) if coverage else float("nan"),
            "auc": float(np.nanmean(auc)) if auc else float("nan"),
            "auc_random": float(np.nanmean(auc_random)) if auc_random else float("nan"),
            "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", required=True, help="models:/NAME@ALIAS ...")
    parser.add_argument("--root", default=".")
    parser.add_argument("--split", default="test")
    parser.add_argument("--methods", nargs="+", default=["default"], help=(
        "heatmap methods to compare; `default`: each family's own"))
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    root = Path(args.root).resolve()
    params = load_params(root / "params.yaml")
    uri, project = tracking.tracking_uri(root, params.mlflow), Project(root)
    rows = []
    for uri_of_model in args.model:
        version = registry.resolve(uri, uri_of_model)
        checkpoint = registry.checkout(uri, version, project.champions)
        view = models.CheckpointMeta.read(checkpoint).config.get("view", "image")
        data = model_data(project.prepared(params.dataset), project.views, view)
        for method in args.methods:
            row = measure(checkpoint, data / args.split, None if method == "default" else method)
            if method == "default":
                row["method"] = f"default: {row['method']}"
            rows.append((f"{version.name} v{version.version}", row))
            print(uri_of_model, row, flush=True)
    lines = ["## Heatmap faithfulness", "",
             f"`python benchmarks/bench_explain.py --model {' '.join(args.model)}"
             f"{' --methods ' + ' '.join(args.methods) if args.methods != ['default'] else ''}"
             " --write` "
             f"in a fresh clone after `make demo`: the demo's champions, {args.split} split. "
             f"Machine: {machine()}.", "",
             "| model | family (method) | images | pointing game | random baseline | "
             "deletion AUC | random order AUC | seconds |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows:
        lines.append(f"| {name} | {r['family']} ({r['method']}) | {r['images']} | {r['pointing']:.3f} | "
                     f"{r['baseline']:.3f} | {r['auc']:.3f} | {r['auc_random']:.3f} | "
                     f"{r['seconds']:.0f} |")
    lines += ["", "Pointing game: share of images whose heatmap maximum lies inside the truth "
              "(goal ≥ 0.8); baseline: the share of the image the truth covers. Deletion AUC: "
              "the model's score while the most-heated pixels are greyed out first, relative "
              "to its first score (lower = the heatmap found what the score depends on)."]
    if args.write:
        print(f"updated {update_section(chr(10).join(lines))}")
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
