"""Pascal VOC XML: `Annotations/*.xml` beside `JPEGImages/` (any depth, e.g. VOCdevkit/VOC2012).

Boxes are 1-based inclusive pixel corners; as detectron2 does, the COCO box is
[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]. `ImageSets/Main/{train,val,test}.txt`
give the source's split when present. Class names come from a names/classes/labels file
when there is one (other names are then unknown), else from the XMLs, sorted.

An object marked `<difficult>1</difficult>` becomes an ignore region (COCO `iscrowd: 1`):
not trained on, and in evaluation neither a hit nor a miss — a detection on it is not a
false positive, as in the VOC protocol. One difference stays: COCO matches a detection to
an ignore region by the share of the detection inside it (intersection over the
detection's area), VOC by plain IoU.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

from visiongate.datasets import safe_load
from visiongate.datasets.formats import base
from visiongate.datasets.formats.base import Issue, Item, Obj, Source
from visiongate.errors import DataError, NotFound

CORNERS = ("xmin", "ymin", "xmax", "ymax")


def _find_annotation_dirs(root: Path) -> list[Path]:
    found = [p for p in base.folders(root) if p.name == "Annotations"]  # no symlinks
    if not found:
        raise NotFound(f"no Annotations/ folder under {root} (Pascal VOC layout)")
    return found


def _source_splits(voc_dir: Path) -> dict[str, str]:
    """Image id -> split from ImageSets/Main/{train,val,test}.txt."""
    splits = {}
    for split in base.SPLITS:
        listing = base.regular_file(voc_dir, voc_dir / "ImageSets" / "Main" / f"{split}.txt")
        if listing is not None:
            for line in safe_load.read_text(listing).split("\n"):
                if line.strip():
                    splits[line.split()[0]] = split
    return splits


def _text(node: ET.Element, tag: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise DataError(f"<{tag}> is missing")
    return child.text.strip()


def _number(node: ET.Element, tag: str) -> float:
    text = _text(node, tag)
    try:
        return float(text)
    except ValueError:
        raise DataError(f"<{tag}> {safe_load.short(text)} is not a number") from None


def _dimension(size: ET.Element, tag: str) -> int:
    """A declared image side: a finite, non-negative number below 2**31 (0: unknown)."""
    value = _number(size, tag)
    if not math.isfinite(value) or not 0 <= value < 2**31:
        raise DataError(f"<{tag}> {value:g} is not an image size")
    return int(value)


def _difficult(node: ET.Element) -> int:
    """1 for `<difficult>1</difficult>` (any other text, or none: 0)."""
    return int((node.findtext("difficult") or "").strip() == "1")


def _parse(path: Path) -> tuple[str, tuple[int, int] | None, list[tuple]]:
    """(file name, declared (w, h), [(class name, corners, where, difficult)]); ValueError
    if malformed.
    The file is read bounded (safe_load.MAX_TEXT_BYTES); expat refuses entity expansion bombs."""
    try:
        tree = ET.fromstring(safe_load.read_bytes(path))
    except (ET.ParseError, LookupError) as err:  # LookupError: an unknown declared encoding
        raise DataError(f"not valid XML: {safe_load.cut(str(err))}") from None
    file_name = (tree.findtext("filename") or "").strip()
    if len(file_name) > 1024:
        raise DataError("<filename> longer than 1024 characters")
    size = tree.find("size")
    declared = None
    if size is not None:
        declared = (_dimension(size, "width"), _dimension(size, "height"))
        declared = declared if all(declared) else None  # some VOC files say 0: unknown
    objects = []
    for number, node in enumerate(tree.iter("object"), start=1):
        box = node.find("bndbox")
        if box is None:
            raise DataError(f"object {number}: <bndbox> is missing")
        name = safe_load.class_name(_text(node, "name"), f"object {number}")
        objects.append((name, [_number(box, c) for c in CORNERS], f"object {number}",
                        _difficult(node)))
    return file_name, declared, objects


def _locate(xml: Path, file_name: str, voc_dir: Path) -> Path | None:
    """The image in JPEGImages/: a regular file reached without a symbolic link."""
    folder = voc_dir / "JPEGImages"
    candidates = [folder / file_name] if file_name else []
    candidates += [folder / (xml.stem + ext) for ext in (".jpg", ".jpeg", ".png")]
    found = (base.regular_file(voc_dir, c) for c in candidates)
    return next((c for c in found if c is not None), None)


def _read_dir(voc_dir: Path, root: Path, names: list[str] | None, issues: list[Issue]):
    splits = _source_splits(voc_dir)
    items, seen = [], set()
    xmls = [p for p in sorted((voc_dir / "Annotations").glob("*.xml")) if base.is_regular(p)]
    for xml in xmls:
        rel = base.relpath(xml, root)
        try:
            file_name, declared, objects = _parse(xml)
        except ValueError as err:
            image = _locate(xml, "", voc_dir)
            seen.add(image)
            if image is not None:
                issues.append(Issue(rel, base.MALFORMED, f"{err}; image {image.name} left out",
                                    base.IMAGE_LEFT_OUT))
            else:
                issues.append(Issue(rel, base.MALFORMED, str(err), base.FILE_LEFT_OUT))
            continue
        if file_name and base.inside(root, voc_dir / "JPEGImages" / file_name) is None:
            issues.append(Issue(rel, base.OUTSIDE, f"<filename> {file_name!r} points outside "
                                "the source; not read", base.IMAGE_LEFT_OUT))
            continue
        image = _locate(xml, file_name, voc_dir)
        if image is None:
            issues.append(Issue(rel, base.MISSING_IMAGE, f"image {file_name or xml.stem!r} not "
                                "found in JPEGImages/", base.FILE_LEFT_OUT))
            continue
        seen.add(image)
        item = Item(image, base.relpath(image, root), splits.get(xml.stem), label=xml,
                    declared_size=declared)
        for name, (x0, y0, x1, y1), where, difficult in objects:
            if names is not None and name not in names:
                issues.append(Issue(rel, base.UNKNOWN_CLASS, f"{where}: class {name!r} not in "
                                    "the names file", base.OBJECT_LEFT_OUT))
                continue
            item.objects.append(Obj(name, [x0 - 1, y0 - 1, x1 - x0 + 1, y1 - y0 + 1],
                                    iscrowd=difficult, where=where))
        items.append(item)
    for image in base.list_images(voc_dir / "JPEGImages"):
        if image not in seen:
            items.append(Item(image, base.relpath(image, root), splits.get(image.stem),
                              unlabelled="no XML annotation"))
    return items


def read(root: Path) -> Source:
    names = base.read_names(root)
    issues: list[Issue] = []
    items: list[Item] = []
    for annotations_dir in _find_annotation_dirs(root):
        items.extend(_read_dir(annotations_dir.parent, root, names, issues))
    classes = names or sorted({o.category for item in items for o in item.objects})
    if len(classes) > safe_load.MAX_CLASSES:
        raise DataError(f"{root}: {len(classes)} class names in the XMLs (at most "
                        f"{safe_load.MAX_CLASSES})")
    index = {name: k for k, name in enumerate(classes, start=1)}
    for item in items:
        for obj in item.objects:
            obj.category = index[obj.category]  # names -> canonical ids
    return Source(root, "voc", classes, items, issues)
