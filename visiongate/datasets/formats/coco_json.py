"""COCO JSON: every `*.json` under the source is one annotation file (boxes, polygons, RLE).

A file's split comes from its name or folder (`instances_val2017.json`, `val/_annotations.
coco.json`); images are looked up relative to the JSON's folder, its parent, the source
root (and their `images/`), else by a unique file name anywhere in the source. Categories
are matched across files by name and renumbered 1..K in the order of their source ids.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from visiongate import geometry
from visiongate.datasets.formats import base
from visiongate.datasets.formats.base import Issue, Item, Obj, Source
from visiongate.errors import DataError


def _load(path: Path, rel: str, issues: list[Issue]) -> dict | None:
    try:
        coco = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        issues.append(Issue(rel, base.MALFORMED, f"not valid JSON: {err}", base.FILE_LEFT_OUT))
        return None
    lists = ("images", "annotations", "categories")
    if not isinstance(coco, dict) or any(not isinstance(coco.get(k), list) for k in lists):
        issues.append(Issue(rel, base.MALFORMED, "not a COCO dict with lists images, "
                            "annotations, categories", base.FILE_LEFT_OUT))
        return None
    return coco


def _resolve(file_name: str, json_path: Path, root: Path, by_name: dict) -> Path | None:
    for folder in (json_path.parent, json_path.parent.parent, root):
        for candidate in (folder / file_name, folder / "images" / file_name):
            if candidate.is_file():
                return candidate
    matches = by_name.get(Path(file_name).name, [])
    return matches[0] if len(matches) == 1 else None


def _segmentation(seg) -> tuple[list | None, dict | None]:
    """(polygons, compressed RLE); ValueError says what is malformed."""
    if isinstance(seg, list):
        if not all(isinstance(p, list) and all(isinstance(v, (int, float)) for v in p)
                   for p in seg):
            raise DataError("segmentation polygons must be lists of numbers")
        if any(len(p) % 2 for p in seg):
            raise DataError("a polygon has an odd number of coordinates")
        return seg, None
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if isinstance(seg["counts"], list):  # uncompressed RLE -> compressed
            seg = geometry.to_rle(seg, *seg["size"])
        counts = seg["counts"]
        return None, {"size": list(seg["size"]),
                      "counts": counts.decode() if isinstance(counts, bytes) else counts}
    raise DataError("segmentation is neither a polygon list nor an RLE dict")


def _object(ann: dict, category: int) -> Obj:
    bbox = ann.get("bbox")
    if bbox is not None and (not isinstance(bbox, list) or len(bbox) != 4
                             or not all(isinstance(v, (int, float)) for v in bbox)):
        raise DataError(f"bbox {bbox!r} is not 4 numbers")
    polygons, rle = None, None
    if ann.get("segmentation"):
        polygons, rle = _segmentation(ann["segmentation"])
    if bbox is None and not polygons and rle is None:
        raise DataError("neither bbox nor segmentation")
    return Obj(category, [float(v) for v in bbox] if bbox else None, polygons, rle,
               iscrowd=int(ann.get("iscrowd", 0) or 0), where=f"annotation id {ann.get('id')}")


def _categories(files: list[dict]) -> list[str]:
    """Class names of all files, in the order of their ids (first file first)."""
    names: list[str] = []
    for coco in files:
        for cat in sorted(coco["categories"], key=lambda c: c.get("id", 0)):
            if str(cat.get("name")) not in names:
                names.append(str(cat.get("name")))
    return names


def _read_file(coco: dict, json_path: Path, root: Path, classes: list[str], by_name: dict,
               issues: list[Issue]) -> list[Item]:
    rel = base.relpath(json_path, root)
    split = base.split_of(json_path.parent / json_path.stem / "x", root)
    category_of = {c.get("id"): classes.index(str(c.get("name"))) + 1 for c in coco["categories"]}
    items: dict = {}
    for image in coco["images"]:
        file_name = str(image.get("file_name", ""))
        path = _resolve(file_name, json_path, root, by_name) if file_name else None
        if path is None:
            issues.append(Issue(rel, base.MISSING_IMAGE, f"image id {image.get('id')}: "
                                f"{file_name!r} not found", base.FILE_LEFT_OUT))
            continue
        size = (image.get("width"), image.get("height"))
        items[image.get("id")] = (image, Item(path, base.relpath(path, root), split,
                                              label=json_path,
                                              declared_size=size if all(size) else None))
    for ann in coco["annotations"]:
        where = f"annotation id {ann.get('id')}" if isinstance(ann, dict) else "annotation"
        if not isinstance(ann, dict) or ann.get("image_id") not in items:
            issues.append(Issue(rel, base.MISSING_IMAGE, f"{where}: its image "
                                f"{ann.get('image_id') if isinstance(ann, dict) else '?'} is "
                                "missing", base.OBJECT_LEFT_OUT))
            continue
        if ann.get("category_id") not in category_of:
            issues.append(Issue(rel, base.UNKNOWN_CLASS, f"{where}: category_id "
                                f"{ann.get('category_id')!r} not in categories",
                                base.OBJECT_LEFT_OUT))
            continue
        item = items[ann["image_id"]][1]
        try:
            item.objects.append(_object(ann, category_of[ann["category_id"]]))
        except (ValueError, TypeError) as err:
            issues.append(Issue(rel, base.MALFORMED, f"{where}: {err}", base.OBJECT_LEFT_OUT))
    return [item for _, item in items.values()]


def read(root: Path) -> Source:
    issues: list[Issue] = []
    by_name: dict[str, list[Path]] = defaultdict(list)
    for image in base.list_images(root):
        by_name[image.name].append(image)
    loaded = []
    for path in sorted(root.rglob("*.json")):
        coco = _load(path, base.relpath(path, root), issues)
        if coco is not None:
            loaded.append((path, coco))
    classes = _categories([coco for _, coco in loaded])
    items: list[Item] = []
    for path, coco in loaded:
        items.extend(_read_file(coco, path, root, classes, by_name, issues))
    return Source(root, "coco", classes, items, issues)
