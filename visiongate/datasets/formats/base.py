"""What every importer produces: a `Source` of `Item`s (one per image) holding `Obj`s, plus
the `Issue`s found while reading. Coordinates are pixels unless `Obj.normalized` (YOLO),
which validation resolves once it knows the image size.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from PIL import Image

from visiongate.errors import DataError
from visiongate.paths import SPLITS  # noqa: F401 (re-exported: the formats use base.SPLITS)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

# Quarantine kinds: stable short strings, one per kind of bad input.
ZERO_BYTE = "zero_byte"                   # empty file
NOT_IMAGE = "not_an_image"                # image extension, but not an image
UNREADABLE = "unreadable_image"           # unreadable or truncated image
SIZE_MISMATCH = "size_mismatch"           # annotation's image size != the image's
MASK_MISMATCH = "mask_size_mismatch"      # mask size != image size
CLIPPED = "clipped"                       # box slightly outside: clipped, kept
BOX_OUTSIDE = "box_outside"               # box further outside than the clip tolerance
DEGENERATE = "degenerate_box"             # zero or negative width/height
NON_FINITE = "non_finite"                 # NaN / inf coordinate
UNKNOWN_CLASS = "unknown_class"           # class id out of range or unknown class name
MALFORMED = "malformed"                   # unparsable line / XML / JSON
SHORT_POLYGON = "short_polygon"           # polygon with fewer than 3 points
DUPLICATE = "duplicate_box"               # exact duplicate: removed, first kept
MISSING_LABEL = "missing_label"           # image without label file: kept as background
MISSING_IMAGE = "missing_image"           # annotation without image: left out

# What happened to the item a quarantine line is about.
IMAGE_LEFT_OUT = "image_left_out"
OBJECT_LEFT_OUT = "object_left_out"
FILE_LEFT_OUT = "file_left_out"
FIXED = "fixed"
KEPT = "kept"


@dataclass(frozen=True)
class Issue:
    file: str        # path relative to the source root
    kind: str
    detail: str
    action: str


@dataclass
class Obj:
    category: int                              # canonical category id, 1..K
    bbox: list[float] | None                   # [x, y, w, h]; None: derive from segmentation
    polygons: list[list[float]] | None = None  # [[x1, y1, x2, y2, ...], ...]
    rle: dict | None = None                    # COCO RLE at the image's size
    normalized: bool = False                   # coordinates in units of the image size
    iscrowd: int = 0
    where: str = ""                            # e.g. "line 3", for reports

    @property
    def has_segmentation(self) -> bool:
        return bool(self.polygons) or self.rle is not None


@dataclass
class Item:
    image: Path                                # the source image
    key: str                                   # image path relative to the source root
    split: str | None = None                   # the source's own split, if any
    objects: list[Obj] = field(default_factory=list)
    label: Path | None = None                  # annotation file the objects came from
    declared_size: tuple[int, int] | None = None  # (w, h) the annotations claim
    mask: Path | None = None                   # semantic label map (mask folders)
    size: tuple[int, int] | None = None        # (w, h), set by validation
    unlabelled: str = ""                       # why it has no label file (reported if kept)


@dataclass
class Source:
    root: Path
    format: str
    classes: list[str]                         # category id k is classes[k - 1]
    items: list[Item]
    issues: list[Issue] = field(default_factory=list)
    mask_values: dict[int, int] | None = None  # mask folders: pixel value -> category id

    def rel(self, path: Path) -> str:
        return relpath(path, self.root)


def pillow_open(path: Path):
    """Pillow's own Image.open. Importing ultralytics replaces it with a wrapper that, on a
    file Pillow cannot identify, pip-installs a HEIF plugin (and fails offline); here an
    unidentified file is simply not an image."""
    patches = sys.modules.get("ultralytics.utils.patches")
    return getattr(patches, "_image_open", Image.open)(path)


def relpath(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "test": "test", "testing": "test"}


def split_of(path: Path, root: Path) -> str | None:
    """The split a folder on the way from root to path names (train2017, instances_val2017)."""
    for part in Path(relpath(path, root)).parts[:-1]:
        for word in re.findall(r"[a-z]+", part.lower()):
            if word in SPLIT_WORDS:
                return SPLIT_WORDS[word]
    return None


def list_images(root: Path) -> list[Path]:
    """Every file with an image extension under root, sorted (hidden folders skipped)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in filenames
                     if Path(f).suffix.lower() in IMAGE_EXTENSIONS)
    return sorted(found)


NAMES_FILES = ("data.yaml", "dataset.yaml", "names.txt", "classes.txt", "labels.txt")


def read_names(root: Path) -> list[str] | None:
    """Class names from data.yaml `names` (list or {id: name}) or a names/classes file."""
    for name in NAMES_FILES:
        path = root / name
        if not path.is_file():
            continue
        if path.suffix == ".yaml":
            try:
                names = (yaml.safe_load(path.read_text()) or {}).get("names")
            except (yaml.YAMLError, AttributeError) as err:
                raise DataError(f"{path}: not a YAML mapping with `names` ({err})") from err
            if isinstance(names, dict):
                try:
                    ids = sorted(int(k) for k in names)
                except ValueError:
                    ids = sorted(map(str, names))  # not integers: the check below names them
                if ids != list(range(len(ids))):
                    raise DataError(f"{path}: `names` ids must be 0..{len(ids) - 1}, got {ids}")
                return [str(names[k] if k in names else names[str(k)]) for k in ids]
            if isinstance(names, list):
                return [str(n) for n in names]
            if names is not None:
                raise DataError(f"{path}: `names` must be a list or a mapping")
            continue
        lines = [line.strip() for line in path.read_text().splitlines()]
        return [line for line in lines if line]
    return None
