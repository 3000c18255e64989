"""COCO JSON: every `*.json` under the source is one annotation file (boxes, polygons, RLE).

A file's split comes from its name or folder (`instances_val2017.json`, `val/_annotations.
coco.json`); images are looked up relative to the JSON's folder, its parent, the source
root (and their `images/`), else by a unique file name anywhere in the source. Categories
are matched across files by name and renumbered 1..K in the order of their source ids.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from visiongate import geometry
from visiongate.datasets import safe_load
from visiongate.datasets.formats import base
from visiongate.datasets.formats.base import Issue, Item, Obj, Source
from visiongate.errors import DataError


def _load(path: Path, rel: str, issues: list[Issue]) -> dict | None:
    """The file's COCO dict (size and nesting checked before parsing: safe_load.load_json),
    keeping only well-typed images and categories; None (and a line) when unusable."""
    try:
        coco = safe_load.load_json(path)
    except DataError as err:
        issues.append(Issue(rel, base.MALFORMED, str(err), base.FILE_LEFT_OUT))
        return None
    lists = ("images", "annotations", "categories")
    if not isinstance(coco, dict) or any(not isinstance(coco.get(k), list) for k in lists):
        issues.append(Issue(rel, base.MALFORMED, "not a COCO dict with lists images, "
                            "annotations, categories", base.FILE_LEFT_OUT))
        return None
    images = [im for k, im in enumerate(coco["images"]) if _usable(
        _image_problem(im), f"images[{k}]", base.IMAGE_LEFT_OUT, rel, issues)]
    categories = [c for k, c in enumerate(coco["categories"]) if _usable(
        _category_problem(c), f"categories[{k}]", base.OBJECT_LEFT_OUT, rel, issues)]
    return dict(coco, images=images, categories=categories)


def _usable(problem: str, where: str, action: str, rel: str, issues: list[Issue]) -> bool:
    if problem:
        issues.append(Issue(rel, base.MALFORMED, f"{where}: {problem}", action))
    return not problem


def _is_id(value) -> bool:
    """A usable COCO id: an integer, or a string of at most MAX_NAME_CHARS characters."""
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, str) and len(value) <= safe_load.MAX_NAME_CHARS)


def _image_problem(image) -> str:
    if not isinstance(image, dict):
        return f"not an object but {safe_load.short(image)}"
    if not _is_id(image.get("id")):
        return f"id {safe_load.short(image.get('id'))} is not an integer or a short string"
    if not isinstance(image.get("file_name"), str) or len(image["file_name"]) > 1024:
        return f"file_name {safe_load.short(image.get('file_name'))} is not a path"
    for side in ("width", "height"):
        value = image.get(side)
        if value is not None and not (safe_load.is_number(value) and 0 <= value < 2**31
                                      and value == int(value)):
            return f"{side} {safe_load.short(value)} is not an image size"
    return ""


def _category_problem(category) -> str:
    if not isinstance(category, dict):
        return f"not an object but {safe_load.short(category)}; its annotations are unknown"
    if not _is_id(category.get("id")):
        return f"id {safe_load.short(category.get('id'))} is not an integer or a short string"
    try:
        safe_load.class_name(category.get("name"), "name")
    except DataError as err:
        return str(err)
    return ""


def _folders(json_path: Path, root: Path) -> list[Path]:
    """Where a file_name is looked up: the JSON's folder, its parent (when still inside the
    source), the source root, and their images/."""
    folders = [f for f in (json_path.parent, json_path.parent.parent, root)
               if base.inside(root, f) is not None]
    return [c for f in dict.fromkeys(folders) for c in (f, f / "images")]


def _resolve(file_name: str, json_path: Path, root: Path, by_name: dict) -> Path | None:
    """The image a file_name names: a regular file inside the source reached without a
    symbolic link; a name that leaves the source is not looked up by its base name."""
    for folder in _folders(json_path, root):
        candidate = base.regular_file(root, folder / file_name)
        if candidate is not None:
            return candidate
    if _outside(file_name, json_path, root):
        return None
    matches = by_name.get(Path(file_name).name, [])
    return matches[0] if len(matches) == 1 else None


def _outside(file_name: str, json_path: Path, root: Path) -> bool:
    """Does file_name, looked up from any of its folders, leave the source?"""
    return any(base.inside(root, folder / file_name) is None
               for folder in _folders(json_path, root))


def _unresolved(rel: str, image: dict, file_name: str, json_path: Path, root: Path) -> Issue:
    where = f"image id {image.get('id')}: {file_name!r}"
    if file_name and _outside(file_name, json_path, root):
        return Issue(rel, base.OUTSIDE, f"{where} points outside the source; not read",
                     base.IMAGE_LEFT_OUT)
    return Issue(rel, base.MISSING_IMAGE, f"{where} not found", base.FILE_LEFT_OUT)


def _segmentation(seg) -> tuple[list | None, dict | None]:
    """(polygons, compressed RLE); ValueError says what is malformed."""
    if isinstance(seg, list):
        if not all(isinstance(p, list) and all(safe_load.is_number(v) for v in p) for p in seg):
            raise DataError("segmentation polygons must be lists of numbers")
        if any(len(p) % 2 for p in seg):
            raise DataError("a polygon has an odd number of coordinates")
        return seg, None
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        safe_load.check_rle(seg, "segmentation")  # runs cover size exactly (pycocotools trusts it)
        if isinstance(seg["counts"], list):  # uncompressed RLE -> compressed
            seg = geometry.to_rle(seg, *seg["size"])
        counts = seg["counts"]
        return None, {"size": list(seg["size"]),
                      "counts": counts.decode() if isinstance(counts, bytes) else counts}
    raise DataError("segmentation is neither a polygon list nor an RLE dict")


def _object(ann: dict, category: int) -> Obj:
    bbox = ann.get("bbox")
    if bbox is not None and (not isinstance(bbox, list) or len(bbox) != 4
                             or not all(safe_load.is_number(v) for v in bbox)):
        raise DataError(f"bbox {safe_load.short(bbox)} is not 4 numbers")
    polygons, rle = None, None
    if ann.get("segmentation"):
        polygons, rle = _segmentation(ann["segmentation"])
    if bbox is None and not polygons and rle is None:
        raise DataError("neither bbox nor segmentation")
    iscrowd = ann.get("iscrowd", 0) or 0
    if iscrowd not in (0, 1):
        raise DataError(f"iscrowd {safe_load.short(iscrowd)} is not 0 or 1")
    return Obj(category, [float(v) for v in bbox] if bbox else None, polygons, rle,
               iscrowd=int(iscrowd),
               where=f"annotation id {safe_load.short(ann.get('id'))}")


def _categories(files: list[dict]) -> list[str]:
    """Class names of all files, in the order of their ids (first file first)."""
    names: list[str] = []
    for coco in files:
        for cat in sorted(coco["categories"], key=lambda c: (isinstance(c["id"], str), c["id"])):
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
            issues.append(_unresolved(rel, image, file_name, json_path, root))
            continue
        size = (image.get("width"), image.get("height"))
        items[image.get("id")] = (image, Item(path, base.relpath(path, root), split,
                                              label=json_path,
                                              declared_size=size if all(size) else None))
    for ann in coco["annotations"]:
        if not isinstance(ann, dict):
            issues.append(Issue(rel, base.MALFORMED, f"annotation {safe_load.short(ann)} is not "
                                "an object", base.OBJECT_LEFT_OUT))
            continue
        where = f"annotation id {safe_load.short(ann.get('id'))}"
        if not _is_id(ann.get("image_id")) or ann["image_id"] not in items:
            issues.append(Issue(rel, base.MISSING_IMAGE, f"{where}: its image "
                                f"{safe_load.short(ann.get('image_id'))} is missing",
                                base.OBJECT_LEFT_OUT))
            continue
        if not _is_id(ann.get("category_id")) or ann["category_id"] not in category_of:
            issues.append(Issue(rel, base.UNKNOWN_CLASS, f"{where}: category_id "
                                f"{safe_load.short(ann.get('category_id'))} not in categories",
                                base.OBJECT_LEFT_OUT))
            continue
        item = items[ann["image_id"]][1]
        try:
            item.objects.append(_object(ann, category_of[ann["category_id"]]))
        except (ValueError, TypeError, OverflowError) as err:
            issues.append(Issue(rel, base.MALFORMED, f"{where}: {safe_load.cut(str(err))}",
                                base.OBJECT_LEFT_OUT))
    return [item for _, item in items.values()]


def read(root: Path) -> Source:
    issues: list[Issue] = []
    by_name: dict[str, list[Path]] = defaultdict(list)
    for image in base.list_images(root):
        by_name[image.name].append(image)
    loaded = []
    for path in base.files(root, ".json"):  # regular files: symlinks are not followed
        coco = _load(path, base.relpath(path, root), issues)
        if coco is not None:
            loaded.append((path, coco))
    classes = _categories([coco for _, coco in loaded])
    if len(classes) > safe_load.MAX_CLASSES:
        raise DataError(f"{root}: {len(classes)} categories (at most {safe_load.MAX_CLASSES})")
    items: list[Item] = []
    for path, coco in loaded:
        items.extend(_read_file(coco, path, root, classes, by_name, issues))
    issues += _unlisted(root, by_name, {Path(item.image).resolve() for item in items})
    return Source(root, "coco", classes, items, issues)


MAX_UNLISTED_LINES = 1000


def _unlisted(root: Path, by_name: dict[str, list[Path]], listed: set[Path]) -> list[Issue]:
    """A `missing_label` line for each image that no JSON lists in a folder holding listed
    images (COCO lists every image, background ones too: an unlisted one is not known to be
    empty, so it is left out). Other folders (label maps in masks/, previews) are not
    images of the dataset. MAX_UNLISTED_LINES lines, then one with the count."""
    folders = {p.parent for p in listed}
    unlisted = sorted(p for paths in by_name.values() for p in paths
                      if p.resolve() not in listed and p.resolve().parent in folders)
    lines = [Issue(base.relpath(p, root), base.MISSING_LABEL, "image not listed in any COCO "
                   "JSON (background images are listed too); left out", base.FILE_LEFT_OUT)
             for p in unlisted[:MAX_UNLISTED_LINES]]
    if len(unlisted) > MAX_UNLISTED_LINES:
        lines.append(Issue(".", base.MISSING_LABEL, f"{len(unlisted) - MAX_UNLISTED_LINES} "
                           "more unlisted images; left out", base.FILE_LEFT_OUT))
    return lines
