"""The object-crops view of a detection dataset: one image-label item per object.

`classify.view: crops` trains and scores a classifier on the objects of a detection or
segmentation dataset (the second-stage classifier: "what is this object?"). Each
annotation (not iscrowd, box at least `MIN_SIDE` px on each side) becomes one image: its
box grown by `MARGIN` of its size on every side, clipped to the image, saved as PNG with
`labels = [its category]`. Every split is written, so the classifier's test split is the
crops of the pinned test images and nothing else.

The view is derived: a pure function of the prepared dataset (whose md5s DVC pins) and of
this module, written once under `.cache/views/` in a folder named by a hash of the
splits' annotations.json bytes, and rebuilt when that hash changes. The source images are
only read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from PIL import Image

from visiongate.datasets import safe_load
from visiongate.datasets.coco import load_split
from visiongate.errors import DataError
from visiongate.paths import SPLITS

MARGIN = 0.1
MIN_SIDE = 4.0
VERSION = "1"  # bump when the crop rule changes: old views are not reused


def _fingerprint(prepared_root: Path) -> str:
    digest = hashlib.sha256(VERSION.encode())
    for split in SPLITS:
        path = prepared_root / split / "annotations.json"
        digest.update(split.encode() + (path.read_bytes() if path.is_file() else b"-"))
    return digest.hexdigest()[:16]


def crop_box(bbox: list[float], width: int, height: int) -> tuple[int, int, int, int] | None:
    """The crop (left, top, right, bottom) for a COCO [x, y, w, h] box: grown by MARGIN of
    its size on each side and clipped to the image; None for a box under MIN_SIDE."""
    x, y, w, h = (float(v) for v in bbox)
    if min(w, h) < MIN_SIDE:
        return None
    left, top = max(0, round(x - MARGIN * w)), max(0, round(y - MARGIN * h))
    right, bottom = min(width, round(x + w + MARGIN * w)), min(height, round(y + h + MARGIN * h))
    return (left, top, right, bottom) if right - left >= 1 and bottom - top >= 1 else None


def _write_split(split_dir: Path, out: Path) -> int:
    split = load_split(split_dir)
    (out / "images").mkdir(parents=True)
    images = []
    for image in split.images:
        anns = [a for a in split.annotations.get(image["id"], []) if not a.get("iscrowd")]
        if not anns:
            continue
        path = split.image_path(image)
        with safe_load.pixel_guard(path), Image.open(path) as im:
            safe_load.check_pixels(im.size, path)
            rgb = im.convert("RGB")
        for ann in anns:
            box = crop_box(ann.get("bbox") or [0, 0, 0, 0], *rgb.size)
            if box is None:
                continue
            name = f"images/{Path(image['file_name']).stem}_{ann['id']}.png"
            rgb.crop(box).save(out / name)
            images.append({"id": len(images) + 1, "file_name": name,
                           "width": box[2] - box[0], "height": box[3] - box[1],
                           "labels": [int(ann["category_id"])],
                           "source": {"file_name": image["file_name"], "annotation": ann["id"]}})
    coco = {"images": images, "annotations": [], "categories": split.categories}
    (out / "annotations.json").write_text(json.dumps(coco))
    return len(images)


def crops_view(prepared_root: Path, cache_root: Path) -> Path:
    """The crops view of a prepared dataset: `<cache_root>/<name>-crops-<hash>/{splits}`,
    written on first use (atomically: a half-written view is never used)."""
    prepared_root = Path(prepared_root)
    view = Path(cache_root) / f"{prepared_root.name}-crops-{_fingerprint(prepared_root)}"
    if (view / ".complete").is_file():
        return view
    partial = view.with_name(view.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    for split in SPLITS:
        if (prepared_root / split / "annotations.json").is_file():
            _write_split(prepared_root / split, partial / split)
    (partial / ".complete").touch()
    shutil.rmtree(view, ignore_errors=True)
    partial.rename(view)
    return view


def model_data(prepared_root: Path, cache_root: Path, view: str,
               exclude_list: Path | None = None) -> Path:
    """Where a model task reads its splits: the prepared dataset itself (`view: image`), or
    its crops view (`view: crops`; DataError when the dataset has no objects to crop).
    With a non-empty exclusion list (data/exclude/<dataset>.csv) the dataset is first the
    view without the excluded items (exclude_view.py), then cropped; without one (or an
    empty one), exactly the folders above."""
    from visiongate.datasets import exclude, exclude_view
    from visiongate.datasets.prepare import has_masks

    if view not in ("image", "crops"):
        raise DataError(f"unknown data view {view!r} (image | crops)")
    entries = exclude.read_list(exclude_list) if exclude_list is not None else []
    data = exclude_view.excluded_view(Path(prepared_root), Path(cache_root), entries,
                                      has_masks(prepared_root)) if entries else Path(prepared_root)
    if view == "image":
        return data
    split = load_split(data / "train")
    if not any(split.annotations.values()):
        raise DataError(f"{prepared_root}: no objects to crop (image labels only): set "
                        "classify.view: image")
    return crops_view(data, cache_root)
