"""Write validated items in the canonical layout (see visiongate/datasets/coco.py):
`<split>/images/*` (byte copies of the source images; an EXIF-rotated or 16-bit, CMYK,
palette, alpha image as an upright 8-bit PNG: visiongate/upright.py), `<split>/annotations.json` (COCO:
boxes, plus polygons or RLE where the source has them) and, when every object has a
segmentation (or the source is a mask folder), `<split>/masks/<stem>.png` label maps.
Image-label sources (folders, csv) write `"labels": [category ids]` on each image entry
and no annotations (visiongate/datasets/image_labels.py).

Instances become a label map by painting them largest first, so where objects overlap
the smaller one (usually the one in front) wins; crowd regions are painted too.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from visiongate import geometry, progress, upright
from visiongate.datasets.formats import masks
from visiongate.datasets.formats.base import Item, Source, pillow_open


def has_segmentations(source: Source, items: list[Item]) -> bool:
    """Masks are written for mask folders, or when every object has a segmentation — and
    never for more than 255 classes: label maps are uint8 (polygons/RLE stay in the JSON)."""
    if source.mask_values is not None:
        return True
    if len(source.classes) > 255:
        return False
    objects = [o for item in items for o in item.objects]
    return bool(objects) and all(o.has_segmentation for o in objects)


def output_names(items: list[Item]) -> dict[str, str]:
    """Source key -> file name in images/: the source's file name, or its path joined with
    '__' when two images (of any split) share a stem (masks are named by stem)."""
    stems = Counter(Path(item.key).stem.lower() for item in items)
    names, used = {}, set()
    for item in items:
        path = Path(item.key)
        name = path.name if stems[path.stem.lower()] == 1 else "__".join(path.parts)
        while Path(name).stem.lower() in used:
            name = f"_{name}"
        used.add(Path(name).stem.lower())
        names[item.key] = name
    return names


def _annotations(item: Item, image_id: int, first_id: int) -> tuple[list[dict], list]:
    """(COCO annotations, [(area, category, rle)]) of one image's objects."""
    width, height = item.size
    anns, painted = [], []
    for offset, obj in enumerate(item.objects):
        ann = {"id": first_id + offset, "image_id": image_id, "category_id": obj.category,
               "bbox": [round(v, 3) for v in obj.bbox], "iscrowd": obj.iscrowd}
        if obj.has_segmentation:
            rle = geometry.to_rle(obj.rle if obj.rle is not None else obj.polygons, height, width)
            ann["area"] = float(mask_utils.area(rle))
            ann["segmentation"] = obj.rle if obj.rle is not None else [
                [round(v, 3) for v in p] for p in obj.polygons]
            painted.append((ann["area"], obj.category, rle))
        else:
            ann["area"] = float(obj.bbox[2] * obj.bbox[3])
        anns.append(ann)
    return anns, painted


def _label_map(item: Item, source: Source, painted: list) -> np.ndarray:
    width, height = item.size
    if source.mask_values is not None:
        if item.mask is None:  # image without a mask: kept as background
            return np.zeros((height, width), np.uint8)
        return masks.to_categories(masks.read_label_map(item.mask), source.mask_values)[0]
    label_map = np.zeros((height, width), np.uint8)
    for _, category, rle in sorted(painted, key=lambda p: -p[0]):  # largest first
        label_map[geometry.to_mask(rle, height, width).astype(bool)] = category
    return label_map


def _write_split(source: Source, items: list[Item], split_dir: Path, names: dict[str, str],
                 with_masks: bool, categories: list[dict]) -> int:
    if split_dir.exists():
        shutil.rmtree(split_dir)
    (split_dir / "images").mkdir(parents=True)
    if with_masks:
        (split_dir / "masks").mkdir()
    images, annotations = [], []
    bar = progress.bar(items, desc=f"write {split_dir.name}")
    for image_id, item in enumerate(bar, start=1):
        # bytes as they are, or an upright 8-bit PNG (EXIF-rotated, 16-bit, CMYK ...)
        name = upright.write_upright(item.image, split_dir / "images" / names[item.key],
                                     pillow_open).name
        images.append({"id": image_id, "file_name": f"images/{name}",
                       "width": item.size[0], "height": item.size[1]})
        if item.labels is not None:  # image-level labels (visiongate/datasets/image_labels.py)
            images[-1]["labels"] = sorted(item.labels)
        anns, painted = _annotations(item, image_id, len(annotations) + 1)
        annotations.extend(anns)
        if with_masks:
            mask_path = split_dir / "masks" / f"{Path(name).stem}.png"
            cv2.imwrite(str(mask_path), _label_map(item, source, painted))
    coco = {"images": images, "annotations": annotations, "categories": categories}
    (split_dir / "annotations.json").write_text(json.dumps(coco, separators=(",", ":")))
    return len(annotations)


def write_canonical(source: Source, splits: dict[str, list[Item]], out_dir: Path) -> dict:
    """Write every split under out_dir (replacing it); return the dataset's info dict."""
    everything = [item for items in splits.values() for item in items]
    with_masks = has_segmentations(source, everything)
    names = output_names(everything)
    categories = [{"id": k, "name": name, "supercategory": ""}
                  for k, name in enumerate(source.classes, start=1)]
    objects = {split: _write_split(source, items, Path(out_dir) / split, names, with_masks,
                                   categories) for split, items in splits.items()}
    info = {"format": source.format, "classes": list(source.classes), "has_masks": with_masks,
            "images": {split: len(items) for split, items in splits.items()},
            "objects": objects}
    if any(item.labels is not None for item in everything):
        info["image_labels"] = True  # a classification dataset: labels, no objects
    return info
