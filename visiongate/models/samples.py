"""Training samples from the canonical layout, as numpy, for the torch families and previews.

Model labels are 1..K: the position of the category in id order, plus one (0 is the
background of label maps). `category_ids[label - 1]` maps a label back to the COCO id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from visiongate import geometry
from visiongate.datasets.coco import Split, load_split, read_semantic_mask


def category_ids(split: Split) -> list[int]:
    return sorted(c["id"] for c in split.categories)


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _object_anns(split: Split, image: dict) -> list[dict]:
    """Annotations that are objects (crowd regions are left out, as ultralytics does)."""
    return [a for a in split.annotations.get(image["id"], []) if not a.get("iscrowd", 0)
            and a["bbox"][2] > 0 and a["bbox"][3] > 0]


def ann_mask(ann: dict, height: int, width: int) -> np.ndarray:
    """(H,W) uint8 mask of one annotation's polygons or RLE (its box when it has neither)."""
    seg = ann.get("segmentation")
    if not seg:
        mask = np.zeros((height, width), np.uint8)
        x, y, w, h = (int(round(v)) for v in ann["bbox"])
        mask[max(y, 0):y + h, max(x, 0):x + w] = 1
        return mask
    return geometry.to_mask(seg, height, width)


def load_sample(split: Split, image: dict, task: str, ids: list[int]) -> dict[str, Any]:
    """One sample: image (H,W,3 uint8) plus, per task, boxes ((N,4) xyxy float32) and labels
    ((N,) int64, 1..K) — "detect"; those and masks ((N,H,W) uint8) — "instance"; a
    (H,W) uint8 label map — "segment"; the image's labels (category ids) — "classify",
    "multilabel"."""
    pixels = read_rgb(split.image_path(image))
    height, width = pixels.shape[:2]
    if task in ("classify", "multilabel"):  # image-level labels: category ids 1..K
        from visiongate.datasets.image_labels import labels_of

        return {"image": pixels,
                "labels": np.array(labels_of(split, image, task == "multilabel"), np.int64)}
    if task == "segment":
        return {"image": pixels, "mask": read_semantic_mask(split, image)}
    anns = _object_anns(split, image)
    boxes = geometry.xywh_to_xyxy([a["bbox"] for a in anns])
    boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
    labels = np.array([ids.index(a["category_id"]) + 1 for a in anns], np.int64)
    sample = {"image": pixels, "boxes": boxes, "labels": labels}
    if task == "instance":
        sample["masks"] = np.stack([ann_mask(a, height, width) for a in anns]) if anns \
            else np.zeros((0, height, width), np.uint8)
    return sample


def load_samples(split_dir: Path, task: str, limit: int | None = None
                 ) -> tuple[list[dict[str, Any]], list[str]]:
    """The first `limit` samples of a split (in id order) and its class names."""
    split = load_split(split_dir)
    images = sorted(split.images, key=lambda i: i["id"])[:limit]
    ids = category_ids(split)
    return [load_sample(split, im, task, ids) for im in images], list(split.class_names)
