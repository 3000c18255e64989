"""Image-level labels of the canonical layout: what a classifier learns and is scored on.

Canonical form: a split's COCO `annotations.json` image entry may carry `"labels": [k, ...]`
(category ids 1..K), written by the image-label importers (`--format folders`, `csv`).
COCO readers ignore the extra key, so one file per split stays the single source of truth
and DVC pins it like any other. An image without the key takes its labels from its
objects: single-label, the category of its largest object (by area); multi-label, every
category present. So any detection or segmentation dataset (the synthetic shapes among
them) is also a classification dataset.
"""

from __future__ import annotations

from visiongate.datasets.coco import Split
from visiongate.errors import DataError


def _area(ann: dict) -> float:
    if ann.get("area") is not None:
        return float(ann["area"])
    bbox = ann.get("bbox") or [0, 0, 0, 0]
    return float(bbox[2]) * float(bbox[3])


def labels_of(split: Split, image: dict, multi_label: bool) -> list[int]:
    """Category ids (1..K, sorted) of one image: its `labels` when it has them, else derived
    from its objects ([] for an image with neither). DataError for an id out of range."""
    k = len(split.categories)
    if "labels" in image:
        labels = image["labels"]
        if not isinstance(labels, list) or any(
                isinstance(c, bool) or not isinstance(c, int) or not 0 < c <= k for c in labels):
            raise DataError(f"{split.root}/annotations.json: image {image.get('id')!r}: "
                            f"labels must be category ids 1..{k}")
        return sorted(set(labels))
    anns = [a for a in split.annotations.get(image["id"], []) if not a.get("iscrowd")]
    if not anns:
        return []
    if multi_label:
        return sorted({int(a["category_id"]) for a in anns})
    return [int(max(anns, key=_area)["category_id"])]


def split_targets(split: Split, multi_label: bool) -> list[list[int]]:
    """labels_of for every image of the split, in split order. A single-label model trains
    and is scored on the images with exactly one label (`single_label_images`)."""
    return [labels_of(split, image, multi_label) for image in split.images]


def has_image_labels(split: Split) -> bool:
    """Whether any image carries explicit labels (an image-label dataset)."""
    return any("labels" in image for image in split.images)


def single_label_images(split: Split) -> list[tuple[dict, int]]:
    """(image, category id) for each image with exactly one label, in split order."""
    out = []
    for image in split.images:
        labels = labels_of(split, image, multi_label=False)
        if len(labels) == 1:
            out.append((image, labels[0]))
    return out


def image_labels_only(prepared_root) -> bool:
    """Whether a prepared dataset is an image-label one (labels on images, no objects): its
    train split decides."""
    from pathlib import Path

    from visiongate.datasets.coco import load_split

    split_dir = Path(prepared_root) / "train"
    if not (split_dir / "annotations.json").is_file():
        return False
    split = load_split(split_dir)
    return has_image_labels(split) and not any(split.annotations.values())
