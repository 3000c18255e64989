"""YOLO txt: `class cx cy w h` boxes or `class x1 y1 x2 y2 ...` polygons, normalised.

The label of `.../images/.../a.jpg` is `.../labels/.../a.txt` (the last `images` folder
becomes `labels`), or `a.txt` beside the image when there is no `images` folder. As in
ultralytics, a file with any line longer than 6 values holds polygons only, so a 5-value
line there is a 2-point polygon. Class names come from data.yaml `names` (list or dict)
or names.txt / classes.txt; without one, classes are `class_0`, `class_1`, ...
"""

from __future__ import annotations

import math
from pathlib import Path

from visiongate.datasets import safe_load
from visiongate.datasets.formats import base
from visiongate.datasets.formats.base import Issue, Item, Obj, Source
from visiongate.errors import DataError


def _label_path(image: Path) -> Path:
    parts = list(image.parts)
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        parts[i] = "labels"
    return Path(*parts).with_suffix(".txt")


def _parse_line(line: str) -> tuple[int, list[float]]:
    """(class id, values); ValueError says what is wrong with the line."""
    tokens = line.split()
    if len(tokens) < 5:
        raise DataError(f"{len(tokens)} values, need at least 5")
    try:
        klass, values = float(tokens[0]), [float(t) for t in tokens[1:]]
    except ValueError:
        raise DataError(f"not all numbers: {safe_load.short(line)}") from None
    if not math.isfinite(klass) or klass != int(klass):
        raise DataError(f"class {safe_load.short(tokens[0])} is not an integer")
    if len(values) > 4 and len(values) % 2:
        raise DataError(f"odd number of polygon coordinates ({len(values)})")
    return int(klass), values


def _read_labels(path: Path, rel: str, n_classes: int | None,
                 issues: list[Issue]) -> tuple[list[Obj] | None, int]:
    """Objects of one label file (1-based canonical ids; None: file unusable) and the
    highest class id seen."""
    parsed = []
    try:
        text = safe_load.read_text(path)
    except DataError as err:  # too big to be a label file: its image is left out
        issues.append(Issue(rel, base.MALFORMED, f"{err}; image left out", base.IMAGE_LEFT_OUT))
        return None, -1
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            parsed.append((number, *_parse_line(line)))
        except ValueError as err:
            issues.append(Issue(rel, base.MALFORMED, f"line {number}: {err}", base.OBJECT_LEFT_OUT))
    segments = any(len(values) > 5 for _, _, values in parsed)  # ultralytics' rule
    objects, top = [], -1
    for number, klass, values in parsed:
        where = f"line {number}"
        top_id = n_classes if n_classes is not None else safe_load.MAX_CLASSES
        if klass < 0 or klass >= top_id:  # checked before any list is sized by it
            limit = f"0..{top_id - 1}" + ("" if n_classes else " (no names file)")
            issues.append(Issue(rel, base.UNKNOWN_CLASS, f"{where}: class {klass} not in {limit}",
                                base.OBJECT_LEFT_OUT))
            continue
        top = max(top, klass)
        if segments:
            objects.append(Obj(klass + 1, None, polygons=[values], normalized=True, where=where))
        else:
            cx, cy, w, h = values
            objects.append(Obj(klass + 1, [cx - w / 2, cy - h / 2, w, h], normalized=True,
                               where=where))
    return objects, top


def read(root: Path) -> Source:
    names = base.read_names(root)
    images = base.list_images(root)
    issues: list[Issue] = []
    items, used_labels, top = [], set(), -1
    for image in images:
        key = base.relpath(image, root)
        label = _label_path(image)
        item = Item(image, key, base.split_of(image, root))
        if base.regular_file(root, label) is not None:  # a symlinked label is not followed
            used_labels.add(label)
            item.label = label
            item.objects, file_top = _read_labels(label, base.relpath(label, root),
                                                  len(names) if names else None, issues)
            top = max(top, file_top)
            if item.objects is None:  # unusable label file (reported)
                continue
        else:
            item.unlabelled = f"no label file {base.relpath(label, root)}"
        items.append(item)
    for label in base.files(root, ".txt"):
        if "labels" in label.relative_to(root).parts and label not in used_labels:
            issues.append(Issue(base.relpath(label, root), base.MISSING_IMAGE,
                                "label file without an image", base.FILE_LEFT_OUT))
    classes = names if names else [f"class_{k}" for k in range(top + 1)]
    return Source(root, "yolo", classes, items, issues)
