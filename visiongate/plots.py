"""The gate report's pictures: PR curves, confusion matrices, worst-image galleries and
robustness bars. Each function writes one PNG and returns its path."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import patches  # noqa: E402
from PIL import Image  # noqa: E402

from visiongate.diagnostics import ImageMatch  # noqa: E402

GT, TP, FP, MISS = "#2ca02c", "#1f77b4", "#d62728", "#ff7f0e"


def _save(fig, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out


def pr_curves(recall: np.ndarray, curves: dict[str, np.ndarray], out: Path) -> Path:
    """Precision vs recall at IoU 0.5, one line per class (AP50 in the legend)."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, precision in curves.items():
        if np.isnan(precision).all():
            continue
        ax.plot(recall, precision, label=f"{name} (AP50 {np.nanmean(precision):.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title="Precision–recall at IoU 0.5")
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, out)


def confusion(cm: np.ndarray, names: list[str], out: Path, title: str) -> Path:
    """Counts, coloured by share of each true-class row."""
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    size = 1.2 + 0.6 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for (i, j), count in np.ndenumerate(cm):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                color="white" if share[i, j] > 0.5 else "black")
    return _save(fig, out)


def _box(ax, box, color: str, dashed: bool = False) -> None:
    x1, y1, x2, y2 = box
    ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color,
                                   linewidth=1.5, linestyle="--" if dashed else "-"))


def _grid(n: int):
    cols = min(4, max(n, 1))
    fig, axes = plt.subplots(math.ceil(max(n, 1) / cols), cols, figsize=(3 * cols, 3.2 * math.ceil(max(n, 1) / cols)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes.flat


def detection_gallery(items: list[tuple[Path, ImageMatch]], names: dict[int, str],
                      out: Path) -> Path:
    """Worst images: ground truth green (orange dashed when missed), detections blue
    when matched, red when false positives."""
    fig, axes = _grid(len(items))
    for ax, (path, m) in zip(axes, items):
        ax.imshow(Image.open(path).convert("RGB"))
        for g, box in enumerate(m.gt_boxes):
            _box(ax, box, GT if m.gt_match[g] >= 0 else MISS, dashed=m.gt_match[g] < 0)
        for d, box in enumerate(m.boxes):
            matched = m.det_match[d] >= 0
            _box(ax, box, TP if matched else FP)
            ax.text(box[0], box[1], f"{names.get(int(m.labels[d]), m.labels[d])} {m.scores[d]:.2f}",
                    fontsize=6, color="white", backgroundcolor=TP if matched else FP)
        ax.set_title(f"{Path(path).name}: {m.errors} error(s)", fontsize=8)
    fig.suptitle("Worst test images — green: truth, orange dashed: missed, "
                 "blue: detected, red: false positive", fontsize=9)
    return _save(fig, out)


def semantic_gallery(items: list[tuple[Path, np.ndarray, np.ndarray, float]], num_classes: int,
                     out: Path) -> Path:
    """Worst images by IoU: image, truth and prediction side by side."""
    fig, axes = plt.subplots(max(len(items), 1), 3, figsize=(7, 2.4 * max(len(items), 1)),
                             squeeze=False)
    for row, (path, target, pred, score) in zip(axes, items):
        row[0].imshow(Image.open(path).convert("RGB"))
        row[0].set_title(f"{Path(path).name} (mIoU {score:.3f})", fontsize=8)
        for ax, labels, title in ((row[1], target, "truth"), (row[2], pred, "prediction")):
            ax.imshow(labels, cmap="tab10", vmin=0, vmax=max(num_classes - 1, 9),
                      interpolation="nearest")
            ax.set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    return _save(fig, out)


def robustness_bars(clean: float, corrupted: dict[str, float], metric: str,
                    min_ratio: float, out: Path) -> Path:
    """Metric on the clean split and on each corruption, with the gate's floor line."""
    names = ["clean", *corrupted]
    values = [clean, *corrupted.values()]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(names), 3.5))
    colors = ["#7f7f7f"] + [GT if v >= clean * min_ratio else FP for v in corrupted.values()]
    ax.bar(names, values, color=colors)
    ax.axhline(clean * min_ratio, color="black", linestyle="--", linewidth=1,
               label=f"gate floor ({min_ratio:.0%} of clean)")
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set(ylabel=metric, ylim=(0, max(1.0, max(values) * 1.1)), title=f"Robustness: {metric}")
    ax.legend(fontsize=8)
    return _save(fig, out)


def heatmap_gallery(rows: list[tuple[str, list[tuple[str, np.ndarray]]]], out: Path,
                    title: str) -> Path:
    """One row per image, its panels (column title, RGB array) side by side."""
    cols = max((len(panels) for _, panels in rows), default=1)
    fig, axes = plt.subplots(max(len(rows), 1), cols, figsize=(3.2 * cols, 3.3 * max(len(rows), 1)),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for row_axes, (name, panels) in zip(axes, rows):
        for ax, (caption, picture) in zip(row_axes, panels):
            ax.imshow(picture)
            ax.set_title(f"{name}\n{caption}" if ax is row_axes[0] else caption, fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, out)
