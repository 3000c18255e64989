"""The gate report's pictures for classifiers: reliability diagram, an image gallery (the
most confident mistakes) and per-class precision–recall curves. Each function writes one
PNG and returns its path (as visiongate.plots, whose helpers it uses)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from visiongate.classify_metrics import Reliability
from visiongate.plots import FP, TP, _grid, _save, plt


def reliability_diagram(bins: Reliability, out: Path, what: str = "top-1 probability") -> Path:
    """Accuracy per confidence bin against the diagonal of perfect calibration; the bar
    width is the bin, the gap to the diagonal red; ECE in the title."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    lo, width = bins.edges[:-1], np.diff(bins.edges)
    filled = bins.count > 0
    ax.bar(lo[filled], bins.accuracy[filled], width=width[filled], align="edge",
           color=TP, edgecolor="white", label="accuracy in bin")
    ax.bar(lo[filled], (bins.confidence - bins.accuracy)[filled], bottom=bins.accuracy[filled],
           width=width[filled], align="edge", color=FP, alpha=0.35, label="gap to confidence")
    ax.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=1, label="calibrated")
    for x, w, n, acc in zip(lo[filled], width[filled], bins.count[filled], bins.accuracy[filled]):
        ax.text(x + w / 2, min(acc, 0.95) + 0.02, str(n), ha="center", fontsize=6)
    ax.set(xlabel=what, ylabel="fraction correct", xlim=(0, 1), ylim=(0, 1.05),
           title=f"Reliability (ECE {bins.ece:.3f}, {len(bins.count)} bins)")
    ax.legend(loc="upper left", fontsize=7)
    return _save(fig, out)


def image_gallery(items: list[tuple[Path, str]], out: Path, title: str) -> Path:
    """Images with a caption each (e.g. true / predicted class and probability)."""
    fig, axes = _grid(len(items))
    axes = list(axes)
    for ax, (path, caption) in zip(axes, items):
        ax.imshow(Image.open(path).convert("RGB"))
        ax.set_title(f"{Path(path).name}\n{caption}", fontsize=7)
    if not items:
        axes[0].text(0.5, 0.5, "none", ha="center", va="center")
    fig.suptitle(title, fontsize=9)
    return _save(fig, out)


def class_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], out: Path) -> Path:
    """Precision vs recall per class: {name: (precision, recall, AP)} (sklearn
    precision_recall_curve), AP in the legend."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, (precision, recall, ap) in curves.items():
        ax.step(recall, precision, where="post", label=f"{name} (AP {ap:.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title="Precision–recall per class")
    if curves:
        ax.legend(loc="lower left", fontsize=8)
    return _save(fig, out)
