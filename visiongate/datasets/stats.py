"""Dataset statistics of a canonical dataset: per split images, objects per class, empty
images and COCO size classes, plus two plots (class histogram, box sizes).

Image-label datasets (`--format folders` / `csv`: `labels` on image entries, see
visiongate/datasets/image_labels.py) also get, per split, images per class (`image_labels`;
an image with several labels counts once per class) and the count of multi-label images;
their histogram plot counts images, and there is no box-size plot.

Size classes follow COCO: small area < 32², medium < 96², large otherwise, where area is
the annotation's `area` (the mask's pixel count when there is a segmentation, else w × h).
"""

from __future__ import annotations

from pathlib import Path

from visiongate.datasets.coco import SPLITS, load_split
from visiongate.datasets.image_labels import has_image_labels, labels_of
from visiongate.errors import NotFound

SMALL, MEDIUM = 32 ** 2, 96 ** 2


def _size_class(area: float) -> str:
    return "small" if area < SMALL else "medium" if area < MEDIUM else "large"


def _split_stats(split) -> tuple[dict, list[list[float]]]:
    names = {c["id"]: c["name"] for c in split.categories}
    per_class = {name: 0 for name in split.class_names}
    sizes = {"small": 0, "medium": 0, "large": 0}
    boxes, empty = [], 0
    for image in split.images:
        anns = split.annotations.get(image["id"], [])
        empty += not anns
        for ann in anns:
            name = names.get(ann["category_id"], str(ann["category_id"]))
            per_class[name] = per_class.get(name, 0) + 1
            w, h = ann["bbox"][2], ann["bbox"][3]
            sizes[_size_class(ann.get("area", w * h))] += 1
            boxes.append([round(w, 1), round(h, 1)])
    summary = {"images": len(split.images), "objects": len(boxes), "empty_images": empty,
               "per_class": per_class, "sizes": sizes}
    if has_image_labels(split):
        summary.update(_label_stats(split, names))
    return summary, boxes


def _label_stats(split, names: dict[int, str]) -> dict:
    """{"image_labels": {name: images}, "multi_label_images": n} of an image-label split."""
    per_class = {name: 0 for name in split.class_names}
    several = 0
    for image in split.images:
        labels = labels_of(split, image, multi_label=True)
        several += len(labels) > 1
        for k in labels:
            name = names.get(k, str(k))
            per_class[name] = per_class.get(name, 0) + 1
    return {"image_labels": per_class, "multi_label_images": several}


def dataset_stats(prepared_root: Path) -> dict:
    """{"classes": [...], "splits": {split: {images, objects, empty_images, per_class: {name: n},
    sizes: {small, medium, large}[, image_labels: {name: n}, multi_label_images]}},
    "box_sizes": {split: [[w, h], ...]}, "image_labels": bool} (JSON-friendly)."""
    prepared_root = Path(prepared_root)
    stats: dict = {"classes": [], "splits": {}, "box_sizes": {}, "image_labels": False}
    for name in SPLITS:
        if not (prepared_root / name / "annotations.json").is_file():
            continue
        split = load_split(prepared_root / name)
        stats["classes"] = stats["classes"] or list(split.class_names)
        stats["splits"][name], stats["box_sizes"][name] = _split_stats(split)
        stats["image_labels"] |= "image_labels" in stats["splits"][name]
    if not stats["splits"]:
        raise NotFound(f"no split with annotations.json under {prepared_root}")
    return stats


def flat_stats(stats: dict) -> dict[str, float]:
    """{"train/images": n, "train/objects": n, "train/empty_images": n, "train/small": n, ...}:
    a flat view for MLflow metrics (per-class counts left out: there may be many classes)."""
    flat = {}
    for split, s in stats["splits"].items():
        for key in ("images", "objects", "empty_images"):
            flat[f"{split}/{key}"] = float(s[key])
        for size, n in s["sizes"].items():
            flat[f"{split}/{size}"] = float(n)
    return flat


def format_stats(stats: dict) -> str:
    lines = []
    for split, s in stats["splits"].items():
        if "image_labels" in s:
            lines.append(f"{split}: {s['images']} images, {s['multi_label_images']} with several "
                         "labels")
            present = {k: n for k, n in s["image_labels"].items() if n}
            lines.append("  images per class: " + (", ".join(f"{k} {n}" for k, n in
                                                            present.items()) or "none"))
            continue
        lines.append(f"{split}: {s['images']} images, {s['objects']} objects, "
                     f"{s['empty_images']} empty images; small {s['sizes']['small']}, "
                     f"medium {s['sizes']['medium']}, large {s['sizes']['large']}")
        present = {k: n for k, n in s["per_class"].items() if n}
        lines.append("  per class: " + (", ".join(f"{k} {n}" for k, n in present.items())
                                        or "no objects"))
    return "\n".join(lines)


def write_stat_plots(stats: dict, out_dir: Path) -> list[Path]:
    """class_histogram.png and box_sizes.png under out_dir; returns their paths. Image-label
    datasets: class_histogram.png only, counting images per class."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    classes, splits = stats["classes"], list(stats["splits"])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(classes) * len(splits) + 2), 4))
    width = 0.8 / max(1, len(splits))
    what = "images" if stats.get("image_labels") else "objects"
    for k, split in enumerate(splits):
        per_class = stats["splits"][split].get("image_labels" if what == "images" else
                                               "per_class", {})
        counts = [per_class.get(c, 0) for c in classes]
        ax.bar(np.arange(len(classes)) + k * width, counts, width, label=split)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=90, fontsize=7)
    ax.set_ylabel(what)
    ax.set_title(f"{what} per class")
    ax.legend()
    fig.tight_layout()
    histogram = out_dir / "class_histogram.png"
    fig.savefig(histogram, dpi=100)
    plt.close(fig)
    if stats.get("image_labels"):
        return [histogram]

    fig, ax = plt.subplots(figsize=(5, 5))
    for split in splits:
        wh = np.asarray(stats["box_sizes"][split], dtype=float).reshape(-1, 2)
        ax.scatter(wh[:, 0], wh[:, 1], s=6, alpha=0.5, label=split)
    for side, label in ((32, "small < 32²"), (96, "medium < 96²")):
        ax.plot([1, side ** 2], [side ** 2, 1], "--", lw=0.8, color="grey")
        ax.annotate(label, (side, side), fontsize=7, color="grey")
    ax.set(xscale="log", yscale="log", xlabel="box width (px)", ylabel="box height (px)",
           title="box sizes")
    ax.legend()
    fig.tight_layout()
    sizes = out_dir / "box_sizes.png"
    fig.savefig(sizes, dpi=100)
    plt.close(fig)
    return [histogram, sizes]
