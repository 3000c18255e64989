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
from pycocotools import mask as mask_utils

from visiongate.datasets import safe_load
from visiongate.datasets.formats import base
from visiongate.datasets.formats.base import Issue, Item, Obj, Source
from visiongate.errors import DataError, NotFound

IMAGE_DIRS = ("image", "images", "img", "imgs")
MASK_DIRS = ("label", "labels", "mask", "masks", "gt", "annotations")
MAX_VALUE = 255  # canonical label maps are uint8: pixel values / categories 1..255
MAX_INSTANCES = 10_000  # connected components in one mask (COCO images have < 100)


def _pairs(root: Path) -> list[tuple[Path, Path]]:
    """(image folder, mask folder) pairs that share a parent."""
    pairs = []
    found = base.folders(root)  # folders reached without a symbolic link
    known = set(found)
    for folder in found:
        images = [folder / d for d in IMAGE_DIRS if folder / d in known]
        masks = [folder / d for d in MASK_DIRS if folder / d in known]
        if images and masks:
            pairs.append((images[0], masks[0]))
    if not pairs:
        raise NotFound(f"no image folder ({'/'.join(IMAGE_DIRS)}) beside a mask folder "
                       f"({'/'.join(MASK_DIRS)}) under {root}")
    return pairs


def read_label_map(path: Path) -> np.ndarray:
    """The raw (H, W) integer label map; ValueError when it is not single-channel, and
    safe_load.ImageTooLarge (a ValueError) over the pixel limit, before decoding."""
    with safe_load.pixel_guard(path), base.pillow_open(path) as mask:
        safe_load.check_pixels(mask.size, path)
        if mask.mode not in ("L", "P", "1", "I", "I;16"):
            raise DataError(f"mask mode {mask.mode!r} is not a single-channel label map")
        return np.asarray(mask.convert("L") if mask.mode == "1" else mask).astype(np.int64)


def to_categories(raw: np.ndarray, value_map: dict[int, int]) -> tuple[np.ndarray, list[int]]:
    """(uint8 map of category ids, pixel values that are no category: the first 11).
    value_map's values and categories are at most MAX_VALUE: a lookup table, never an array
    sized by a pixel value."""
    present = np.unique(raw)
    unknown = present[~np.isin(present, [0, *value_map])][:11].tolist()
    lut = np.zeros(MAX_VALUE + 1, np.uint8)
    for value, category in value_map.items():
        lut[value] = category
    if raw.dtype == np.uint8:
        return lut[raw], unknown
    in_range = (raw >= 0) & (raw <= MAX_VALUE)
    return np.where(in_range, lut[np.clip(raw, 0, MAX_VALUE)], 0).astype(np.uint8), unknown


def _value_map(values: set[int], names: list[str] | None) -> tuple[dict[int, int], list[str]]:
    """Pixel value -> category id (1..MAX_VALUE) and class names. Values above MAX_VALUE are
    no class: validation quarantines their masks (unknown_class)."""
    if names and names[0].lower() in ("background", "_background_", "bg"):
        names = names[1:]
    if names and len(names) > MAX_VALUE:
        raise DataError(f"{len(names)} class names: a mask label map holds at most {MAX_VALUE}")
    values = {v for v in values if 0 <= v <= MAX_VALUE}
    if values <= {0, 255} or values <= {0, 1} and names is not None and len(names) == 1:
        return {255: 1, 1: 1}, names[:1] if names else ["foreground"]
    top = len(names) if names else max(values | {1})
    return {k: k for k in range(1, top + 1)}, names or [f"class_{k}" for k in range(1, top + 1)]


def mask_objects(label_map: np.ndarray) -> list[Obj]:
    """One object per connected component of each category (label_map holds category ids);
    ImageTooLarge past MAX_INSTANCES components (a noise mask, not labels)."""
    objects = []
    for category in np.unique(label_map):
        if category == 0:
            continue
        count, components, stats, _ = cv2.connectedComponentsWithStats(
            (label_map == category).astype(np.uint8), connectivity=8)
        if len(objects) + count - 1 > MAX_INSTANCES:
            raise safe_load.ImageTooLarge(f"more than {MAX_INSTANCES} instances (connected "
                                          "components) in one mask")
        for k, rle in enumerate(_component_rles(components, count), start=1):
            x, y, w, h = (int(v) for v in stats[k, :4])
            objects.append(Obj(int(category), [float(x), float(y), float(w), float(h)], rle=rle,
                               where=f"component {k} of class {category}"))
    return objects


def _component_rles(components: np.ndarray, count: int) -> list[dict]:
    """JSON-ready RLEs of labels 1..count-1 of a components map, from one pass over its
    column-major runs: time and memory grow with the pixels, not pixels x components (a
    noise mask has ~10^5 components)."""
    height, width = components.shape
    flat = components.ravel(order="F")
    starts = np.flatnonzero(np.concatenate([[True], flat[1:] != flat[:-1]]))
    ends = np.append(starts[1:], flat.size)
    labels = flat[starts]
    order = np.argsort(labels, kind="stable")  # by label, in pixel order within one
    starts, ends, labels = starts[order], ends[order], labels[order]
    bounds = np.searchsorted(labels, np.arange(count + 1))
    rles = []
    for k in range(1, count):
        s, e = starts[bounds[k]:bounds[k + 1]], ends[bounds[k]:bounds[k + 1]]
        counts = np.empty(2 * len(s) + 1, np.int64)
        counts[0::2] = np.append(s, flat.size) - np.concatenate([[0], e])  # background runs
        counts[1::2] = e - s
        counts = counts if counts[-1] else counts[:-1]  # no empty run at the end
        rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts.tolist()},
                                     height, width)
        rles.append({"size": [height, width], "counts": rle["counts"].decode("ascii")})
    return rles


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
                    present = np.unique(read_label_map(item.mask))
                    values |= set(present[(present >= 0) & (present <= MAX_VALUE)].tolist())
                except (OSError, SyntaxError, ValueError, EOFError):
                    pass  # validation reports it against this item
            else:
                item.unlabelled = "no mask"
            items.append(item)
        for stem in sorted(set(masks) - paired):
            issues.append(Issue(base.relpath(masks[stem], root), base.MISSING_IMAGE,
                                "mask without an image", base.FILE_LEFT_OUT))
    value_map, classes = _value_map(values, base.read_names(root))
    return Source(root, "masks", classes, items, issues, mask_values=value_map)
