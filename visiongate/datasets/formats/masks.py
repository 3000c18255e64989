"""Mask PNG folders: an image folder (`image/`, `images/`, `img/`) beside a label-map folder
(`label/`, `labels/`, `mask/`, `masks/`, `gt/`), paired by relative path and stem:
`image/X.png` <-> `label/X.png`, `images/train/X.jpg` <-> `masks/train/X.png`.

A mask is a single-channel semantic label map. Binary 0/255 masks are one class,
"foreground" unless a names file names it. Otherwise pixel value k is category k (0 is
background) named by the k-th line of a names file (a leading "background" line is
skipped) or `class_k`. Instances are the connected components of each class; each
becomes one annotation (RLE and box).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from visiongate import geometry
from visiongate.datasets.formats import base
from visiongate.datasets.formats.base import Issue, Item, Obj, Source
from visiongate.errors import DataError, NotFound

IMAGE_DIRS = ("image", "images", "img", "imgs")
MASK_DIRS = ("label", "labels", "mask", "masks", "gt", "annotations")


def _pairs(root: Path) -> list[tuple[Path, Path]]:
    """(image folder, mask folder) pairs that share a parent."""
    pairs = []
    for folder in sorted(p for p in [root, *root.rglob("*")] if p.is_dir()):
        images = [folder / d for d in IMAGE_DIRS if (folder / d).is_dir()]
        masks = [folder / d for d in MASK_DIRS if (folder / d).is_dir()]
        if images and masks:
            pairs.append((images[0], masks[0]))
    if not pairs:
        raise NotFound(f"no image folder ({'/'.join(IMAGE_DIRS)}) beside a mask folder "
                       f"({'/'.join(MASK_DIRS)}) under {root}")
    return pairs


def read_label_map(path: Path) -> np.ndarray:
    """The raw (H, W) integer label map; ValueError when it is not single-channel."""
    with base.pillow_open(path) as mask:
        if mask.mode not in ("L", "P", "1", "I", "I;16"):
            raise DataError(f"mask mode {mask.mode!r} is not a single-channel label map")
        return np.asarray(mask.convert("L") if mask.mode == "1" else mask).astype(np.int64)


def to_categories(raw: np.ndarray, value_map: dict[int, int]) -> tuple[np.ndarray, list[int]]:
    """(uint8 map of category ids, pixel values that are no category)."""
    out = np.zeros(raw.shape, np.uint8)
    unknown = []
    for value in np.unique(raw).tolist():
        if value in value_map:
            out[raw == value] = value_map[value]
        elif value != 0:
            unknown.append(value)
    return out, unknown


def _value_map(values: set[int], names: list[str] | None) -> tuple[dict[int, int], list[str]]:
    if names and names[0].lower() in ("background", "_background_", "bg"):
        names = names[1:]
    if values <= {0, 255} or values <= {0, 1} and names is not None and len(names) == 1:
        return {255: 1, 1: 1}, names[:1] if names else ["foreground"]
    top = len(names) if names else max(values | {1})
    return {k: k for k in range(1, top + 1)}, names or [f"class_{k}" for k in range(1, top + 1)]


def mask_objects(label_map: np.ndarray) -> list[Obj]:
    """One object per connected component of each category (label_map holds category ids)."""
    objects = []
    for category in np.unique(label_map):
        if category == 0:
            continue
        count, components, stats, _ = cv2.connectedComponentsWithStats(
            (label_map == category).astype(np.uint8), connectivity=8)
        for k in range(1, count):
            x, y, w, h = (int(v) for v in stats[k, :4])
            crop = np.zeros(label_map.shape, np.uint8, order="F")
            crop[y:y + h, x:x + w] = components[y:y + h, x:x + w] == k
            rle = geometry.encode_mask(crop)
            objects.append(Obj(int(category), [float(x), float(y), float(w), float(h)], rle=rle,
                               where=f"component {k} of class {category}"))
    return objects


def read(root: Path) -> Source:
    issues: list[Issue] = []
    items, values = [], set()
    for image_dir, mask_dir in _pairs(root):
        masks = {p.relative_to(mask_dir).with_suffix("").as_posix(): p
                 for p in base.list_images(mask_dir)}
        paired = set()
        for image in base.list_images(image_dir):
            stem = image.relative_to(image_dir).with_suffix("").as_posix()
            item = Item(image, base.relpath(image, root), base.split_of(image, root))
            if stem in masks:
                item.mask = item.label = masks[stem]
                paired.add(stem)
                try:
                    values |= set(np.unique(read_label_map(item.mask)).tolist())
                except (OSError, ValueError):
                    pass  # validation reports it against this item
            else:
                item.unlabelled = "no mask"
            items.append(item)
        for stem in sorted(set(masks) - paired):
            issues.append(Issue(base.relpath(masks[stem], root), base.MISSING_IMAGE,
                                "mask without an image", base.FILE_LEFT_OUT))
    value_map, classes = _value_map(values, base.read_names(root))
    return Source(root, "masks", classes, items, issues, mask_values=value_map)
