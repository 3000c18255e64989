"""Validation: check every image and annotation of a `Source`; bad items become quarantine
`Issue`s (file, kind, detail, action) and are left out, good items in the same file stay.

Never writes to the source. `check_prepared` re-checks a canonical dataset cheaply (image
headers only) and summarises its quarantine report.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from visiongate import progress, upright
from visiongate.datasets import safe_load
from visiongate.datasets.coco import SPLITS, load_split
from visiongate.datasets.formats import base, masks
from visiongate.datasets.formats.base import Issue, Item, Obj, Source
from visiongate.datasets.validate_labels import check_image_labels, drop_duplicates
from visiongate.errors import DataError
from visiongate.outcomes import QuarantineSummary

QUARANTINE_FIELDS = ("file", "kind", "detail", "action")
CLIP_EPSILON = 1e-6  # relative overshoot below this is float noise: clipped silently


def inspect_image(path: Path, decode: bool = True,
                  max_pixels: int | None = None) -> tuple[tuple[int, int] | None, str, str]:
    """((w, h) or None, kind, detail): decodes the pixels (truncation) unless decode=False,
    never when the header says more than max_pixels (default: safe_load.max_pixels())."""
    try:
        if path.stat().st_size == 0:
            return None, base.ZERO_BYTE, "empty file"
        with safe_load.pixel_guard(""), base.pillow_open(path) as image:
            safe_load.check_pixels(image.size, "", max_pixels)
            width, height = image.size
            size = upright.displayed_size(image)  # labels refer to the displayed image
            if decode:
                if image.format == "JPEG":  # 1/8-scale decoding still reads every byte
                    image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
                image.load()
    except UnidentifiedImageError:
        return None, base.NOT_IMAGE, f"not an image file ({path.suffix} extension)"
    except safe_load.ImageTooLarge as err:
        return None, base.TOO_LARGE, str(err)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        return None, base.UNREADABLE, f"cannot decode: {err}"
    return size, "", ""


def _scaled(obj: Obj, width: int, height: int) -> Obj:
    if not obj.normalized:
        return obj
    bbox = None if obj.bbox is None else [obj.bbox[0] * width, obj.bbox[1] * height,
                                          obj.bbox[2] * width, obj.bbox[3] * height]
    polygons = None if obj.polygons is None else [
        [v * (width if i % 2 == 0 else height) for i, v in enumerate(p)] for p in obj.polygons]
    return Obj(obj.category, bbox, polygons, obj.rle, False, obj.iscrowd, obj.where)


def _box_of(obj: Obj) -> list[float]:
    if obj.bbox is not None:
        return list(obj.bbox)
    if obj.polygons:
        xs = [v for p in obj.polygons for v in p[0::2]]
        ys = [v for p in obj.polygons for v in p[1::2]]
        return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    return [float(v) for v in mask_utils.toBbox(obj.rle)]


def _clip(obj: Obj, box: list[float], width: int, height: int, tolerance: float):
    """(clipped obj, kind) with kind "" (inside), CLIPPED, or BOX_OUTSIDE."""
    x0, y0, x1, y1 = box[0], box[1], box[0] + box[2], box[1] + box[3]
    over = max(max(0.0, -x0, x1 - width) / width, max(0.0, -y0, y1 - height) / height)
    if over > tolerance:
        return obj, base.BOX_OUTSIDE
    x0, x1 = max(0.0, x0), min(float(width), x1)
    y0, y1 = max(0.0, y0), min(float(height), y1)
    polygons = None if obj.polygons is None else [
        list(np.clip(p, 0, [width, height] * (len(p) // 2)).tolist()) for p in obj.polygons]
    clipped = Obj(obj.category, [x0, y0, x1 - x0, y1 - y0], polygons, obj.rle, False,
                  obj.iscrowd, obj.where)
    return clipped, base.CLIPPED if over > CLIP_EPSILON else ""


def check_object(obj: Obj, size: tuple[int, int], tolerance: float,
                 min_box: float = 0.0) -> tuple[Obj | None, list]:
    """(the object in pixels, clipped if needed, or None) and [(kind, detail, action)]. A box
    (after clipping) narrower or lower than min_box px is a labelling slip: `tiny_box`."""
    width, height = size
    obj, found = _scaled(obj, width, height), []
    coords = (obj.bbox or []) + [v for p in obj.polygons or [] for v in p]
    if not all(math.isfinite(v) for v in coords):  # after scaling: 1e308 * width overflows
        return None, [(base.NON_FINITE, "NaN or inf coordinate", base.OBJECT_LEFT_OUT)]
    if obj.polygons is not None:
        short = [p for p in obj.polygons if len(p) < 6]
        if short:
            found.append((base.SHORT_POLYGON, f"{len(short)} polygon(s) with < 3 points",
                          base.OBJECT_LEFT_OUT if len(short) == len(obj.polygons) else base.FIXED))
            if len(short) == len(obj.polygons):
                return None, found
            obj.polygons = [p for p in obj.polygons if len(p) >= 6]
    if obj.rle is not None and list(obj.rle["size"]) != [height, width]:
        return None, [(base.MASK_MISMATCH, f"RLE size {obj.rle['size']} (h, w) != image "
                       f"({height}, {width})", base.OBJECT_LEFT_OUT)]
    box = _box_of(obj)
    if box[2] <= 0 or box[3] <= 0:
        return None, found + [(base.DEGENERATE, f"box w={box[2]:g} h={box[3]:g}",
                               base.OBJECT_LEFT_OUT)]
    clipped, kind = _clip(obj, box, width, height, tolerance)
    detail = f"box {[round(v, 2) for v in box]} in a {width}x{height} image"
    if kind == base.BOX_OUTSIDE:
        return None, found + [(kind, f"{detail}: beyond the clip tolerance {tolerance:g}",
                               base.OBJECT_LEFT_OUT)]
    if kind == base.CLIPPED:
        found.append((kind, f"{detail}: clipped to the image", base.FIXED))
    w, h = clipped.bbox[2], clipped.bbox[3]
    if min(w, h) < min_box:
        return None, found + [(base.TINY_BOX, f"box {w:g}x{h:g} px, under validation."
                               f"min_box_px {min_box:g} (a point or a slip of the mouse?)",
                               base.OBJECT_LEFT_OUT)]
    outline = sum(safe_load.polygon_perimeter(p) for p in clipped.polygons or [])
    if outline > safe_load.MAX_POLYGON_PERIMETER:  # pycocotools allocates ~52 B per px
        limit = safe_load.MAX_POLYGON_PERIMETER
        return None, found + [(base.TOO_LARGE, f"polygon outline {outline:.0f} px > {limit} px",
                               base.OBJECT_LEFT_OUT)]
    return clipped, found


def _semantic_objects(item: Item, source: Source, size: tuple[int, int]):
    """(objects, image-level (kind, detail) or None) of a semantic label map."""
    mask_size, kind, detail = inspect_image(item.mask)
    if kind:
        return [], (kind, f"mask {source.rel(item.mask)}: {detail}")
    if mask_size != size:
        return [], (base.MASK_MISMATCH, f"mask {source.rel(item.mask)} is {mask_size[0]}x"
                    f"{mask_size[1]}, image is {size[0]}x{size[1]}")
    try:
        label_map, unknown = masks.to_categories(masks.read_label_map(item.mask),
                                                 source.mask_values)
    except ValueError as err:
        return [], (base.MALFORMED, f"mask {source.rel(item.mask)}: {err}")
    if unknown:
        more = " ..." if len(unknown) > 10 else ""
        return [], (base.UNKNOWN_CLASS, f"mask {source.rel(item.mask)}: values {unknown[:10]}"
                    f"{more} are not classes 1..{len(source.classes)}")
    try:
        return masks.mask_objects(label_map), None
    except safe_load.ImageTooLarge as err:
        return [], (base.TOO_LARGE, f"mask {source.rel(item.mask)}: {err}")


def _check_item(item: Item, source: Source, tolerance: float, issues: list[Issue],
                min_box: float) -> bool:
    """Check one image and its objects in place; False when the image is left out."""
    size, kind, detail = inspect_image(item.image)
    if not kind and item.declared_size and tuple(item.declared_size) != size:
        (w, h) = item.declared_size
        kind, detail = base.SIZE_MISMATCH, f"annotations say {w}x{h}, image is {size[0]}x{size[1]}"
        if (w, h) == size[::-1]:
            detail += (" as displayed (EXIF orientation): labels must refer to the displayed "
                       "photo, as labelling tools show it")
    if not kind and item.mask is not None:
        item.objects, problem = _semantic_objects(item, source, size)
        kind, detail = problem or ("", "")
    if kind:
        issues.append(Issue(item.key, kind, detail, base.IMAGE_LEFT_OUT))
        return False
    item.size = size
    if item.unlabelled:
        issues.append(Issue(item.key, base.MISSING_LABEL, f"{item.unlabelled}; kept as a "
                            "background image", base.KEPT))
    label = source.rel(item.label) if item.label else item.key
    kept, seen = [], set()
    for obj in item.objects:
        checked, found = check_object(obj, size, tolerance, min_box)
        issues.extend(Issue(label, k, f"{obj.where} ({item.key}): {d}", a) for k, d, a in found)
        if checked is None:
            continue
        key = (checked.category, *(round(v, 4) for v in checked.bbox))
        if key in seen:
            issues.append(Issue(label, base.DUPLICATE, f"{obj.where} ({item.key}): same class and "
                                f"box as an earlier object; removed", base.FIXED))
            continue
        seen.add(key)
        kept.append(checked)
    item.objects = kept
    return True


def validate(source: Source, clip_tolerance: float,
             min_box_px: float = 0.0) -> tuple[list[Item], list[Issue]]:
    """(items kept, every issue: the reader's first); items are checked in place. Then the
    same bytes twice lose their repeats (a held-out copy kept; validate_labels), and image-
    label sources (folders, csv) their empty classes too."""
    issues = list(source.issues)
    kept = [item for item in progress.bar(source.items, desc="validate")
            if _check_item(item, source, clip_tolerance, issues, min_box_px)]
    if any(item.labels is not None for item in source.items):  # folders, csv
        kept = check_image_labels(source, kept, issues)
    else:  # the same photo twice: once (a held-out copy first), never in train and test
        kept = drop_duplicates(source, kept, issues)
    return kept, issues


def write_quarantine(issues: list[Issue], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(QUARANTINE_FIELDS)
        writer.writerows((i.file, i.kind, i.detail, i.action) for i in issues)


def read_quarantine(path: Path) -> list[Issue]:
    """The quarantine report's lines; [] when there is none (e.g. a generated dataset)."""
    if not Path(path).is_file():
        return []
    with Path(path).open(newline="") as f:
        return [Issue(r["file"], r["kind"], r["detail"], r.get("action", ""))
                for r in csv.DictReader(f)]


def quarantined_images(issues: list[Issue]) -> int:
    return len({i.file for i in issues if i.action == base.IMAGE_LEFT_OUT})


def summarize(issues: list[Issue], images: int) -> QuarantineSummary:
    """The summary of a quarantine report; images = images kept."""
    quarantined = quarantined_images(issues)
    total = images + quarantined
    return QuarantineSummary(images, quarantined, quarantined / total if total else 0.0,
                             dict(sorted(Counter(i.kind for i in issues).items())))


def check_prepared(prepared_root: Path) -> QuarantineSummary:
    """Summary of a canonical dataset's quarantine report; DataError if a split is broken.

    Checks every split's annotations.json and that each image exists and its header
    decodes to the recorded size (headers only: fast).
    """
    prepared_root = Path(prepared_root)
    images, broken, examples = 0, 0, []
    for name in SPLITS:
        try:
            split = load_split(prepared_root / name)
        except FileNotFoundError as err:
            raise DataError(f"{prepared_root}: split {name!r} is unreadable: {err}") from err
        for image in progress.bar(split.images, desc=f"check {name}"):
            path = split.image_path(image)
            size, kind, detail = (None, "missing", "no such file") if not path.is_file() else \
                inspect_image(path, decode=False)
            if not kind and size != (image.get("width"), image.get("height")):
                kind, detail = "size", f"is {size}, annotations.json says " \
                                       f"{(image.get('width'), image.get('height'))}"
            if kind:
                broken += 1
                if len(examples) < 3:
                    examples.append(f"{path}: {detail}")
        images += len(split.images)
    if broken:
        raise DataError(f"{prepared_root}: {broken} broken image(s), e.g. " + "; ".join(examples))
    return summarize(read_quarantine(prepared_root / "quarantine.csv"), images)
