"""Checks of COCO files from outside the code (`visiongate evaluate-coco GT PRED`) before any
library sees them: a mistyped field is one `DataError` naming the file, the entry and the
field (`gt.json: annotations[3].bbox: not 4 finite numbers`), never a traceback from deep
inside pycocotools or faster-coco-eval, and nothing is sized by an unchecked value.

Results whose category id is not a ground-truth category are refused, not dropped: a
results file for another label map would otherwise be scored silently. So are RLEs whose
size is not their image's [height, width] or whose runs do not cover exactly that size.
"""

from __future__ import annotations

import math

from visiongate.datasets import safe_load
from visiongate.errors import DataError


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value) -> bool:
    return safe_load.is_number(value) and math.isfinite(value)


def _entries(data: dict, key: str, path) -> list[dict]:
    entries = data.get(key, [] if key == "annotations" else None)
    if not isinstance(entries, list):
        raise DataError(f"{path}: not a COCO dataset: `{key}` must be a list, not "
                        f"{type(entries).__name__}")
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DataError(f"{path}: {key}[{k}] is not an object but {safe_load.short(entry)}")
    return entries


def _ids(entries: list[dict], key: str, path) -> set[int]:
    ids = set()
    for k, entry in enumerate(entries):
        value = entry.get("id")
        if not _is_int(value):
            raise DataError(f"{path}: {key}[{k}].id {safe_load.short(value)} is not an integer")
        if value in ids:
            raise DataError(f"{path}: {key}[{k}].id {value} appears twice")
        ids.add(value)
    return ids


def _image_sizes(images: list[dict], path, need: bool) -> dict[int, tuple[int, int] | None]:
    """Image id -> (height, width), None when not given (allowed unless `need`)."""
    sizes = {}
    for k, image in enumerate(images):
        hw = image.get("height"), image.get("width")
        if hw == (None, None) and not need:
            sizes[image["id"]] = None
            continue
        if not all(_is_int(v) and 0 < v < 2**31 for v in hw):
            raise DataError(f"{path}: images[{k}]: height, width {safe_load.short(hw)} are not "
                            "positive integers" + (" (needed for segm)" if need else ""))
        sizes[image["id"]] = hw
    return sizes


def _bbox_problem(bbox) -> str:
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_finite(v) for v in bbox)):
        return f"{safe_load.short(bbox)} is not 4 finite numbers"
    return "a negative width or height" if bbox[2] < 0 or bbox[3] < 0 else ""


def _segmentation_problem(seg, size: tuple[int, int] | None) -> str:
    """What is wrong with a polygon list or RLE dict at an image of `size` (h, w), or ""."""
    if isinstance(seg, dict):
        try:
            safe_load.check_rle(seg, "RLE", size)
        except DataError as err:
            return str(err)
        return ""
    if not isinstance(seg, list) or not seg:
        return f"{safe_load.short(seg)} is neither a polygon list nor an RLE dict"
    for polygon in seg:
        if not (isinstance(polygon, list) and len(polygon) >= 4 and len(polygon) % 2 == 0
                and all(_finite(v) for v in polygon)):
            return f"polygon {safe_load.short(polygon)} is not >= 2 finite (x, y) points"
    outline = sum(safe_load.polygon_perimeter(p) for p in seg)
    if outline > safe_load.MAX_POLYGON_PERIMETER:
        return f"polygon outline {outline:.0f} px > {safe_load.MAX_POLYGON_PERIMETER} px"
    return ""


def _check_annotation(ann: dict, where: str, images: dict, categories: set, iou_type: str):
    """DataError naming the field of a ground-truth annotation that is wrong."""
    if not _is_int(ann.get("image_id")) or ann["image_id"] not in images:
        raise DataError(f"{where}.image_id {safe_load.short(ann.get('image_id'))} is not an "
                        "image id of the file")
    if not _is_int(ann.get("category_id")) or ann["category_id"] not in categories:
        raise DataError(f"{where}.category_id {safe_load.short(ann.get('category_id'))} is "
                        "not a category id of the file")
    if "bbox" in ann or iou_type == "bbox":
        problem = _bbox_problem(ann.get("bbox"))
        if problem:
            raise DataError(f"{where}.bbox: {problem}")
    if iou_type == "segm":  # only the segm evaluation reads segmentations
        problem = _segmentation_problem(ann.get("segmentation"), images[ann["image_id"]])
        if problem:
            raise DataError(f"{where}.segmentation: {problem}")
    for field in ("area", "iscrowd"):
        if field in ann and not (_finite(ann[field]) and ann[field] >= 0):
            raise DataError(f"{where}.{field} {safe_load.short(ann[field])} is not a "
                            "non-negative number")


def check_ground_truth(gt: dict, path, iou_type: str) -> dict[int, tuple[int, int] | None]:
    """Image id -> (height, width) of a well-formed COCO ground truth; DataError otherwise."""
    images = _entries(gt, "images", path)
    categories = _entries(gt, "categories", path)
    _ids(images, "images", path)
    category_ids = _ids(categories, "categories", path)
    for k, category in enumerate(categories):
        safe_load.class_name(category.get("name"), f"{path}: categories[{k}].name")
    sizes = _image_sizes(images, path, need=iou_type == "segm")
    for k, ann in enumerate(_entries(gt, "annotations", path)):
        _check_annotation(ann, f"{path}: annotations[{k}]", sizes, category_ids, iou_type)
    return sizes


def check_results(results: list, path, sizes: dict, category_ids: set, iou_type: str) -> None:
    """DataError naming the first result (and field) that is not a usable COCO result for
    this ground truth: image and category ids must be the ground truth's."""
    key = "segmentation" if iou_type == "segm" else "bbox"
    unknown = set()
    for k, result in enumerate(results):
        where = f"{path}: results[{k}]"
        if not isinstance(result, dict):
            raise DataError(f"{where} is not an object but {safe_load.short(result)}")
        missing = [f for f in ("image_id", "category_id", "score", key) if f not in result]
        if missing:
            raise DataError(f"{where}: every result needs image_id, category_id, score, {key} "
                            f"(missing {', '.join(missing)})")
        if not _is_int(result["image_id"]) or result["image_id"] not in sizes:
            raise DataError(f"{where}.image_id {safe_load.short(result['image_id'])} is not an "
                            "image id of the ground truth")
        if not _is_int(result["category_id"]):
            raise DataError(f"{where}.category_id {safe_load.short(result['category_id'])} is "
                            "not an integer")
        if result["category_id"] not in category_ids:
            unknown.add(result["category_id"])
        if not _finite(result["score"]):
            raise DataError(f"{where}.score {safe_load.short(result['score'])} is not a finite "
                            "number")
        problem = _bbox_problem(result[key]) if key == "bbox" else _segmentation_problem(
            result[key], sizes[result["image_id"]])
        if problem:
            raise DataError(f"{where}.{key}: {problem}")
    if unknown:
        raise DataError(f"{path}: category ids {sorted(unknown)[:10]} are not categories of the "
                        f"ground truth ({len(unknown)} unknown): refused rather than scored")
