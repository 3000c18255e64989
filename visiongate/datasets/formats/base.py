"""What every importer produces: a `Source` of `Item`s (one per image) holding `Obj`s, plus
the `Issue`s found while reading. Coordinates are pixels unless `Obj.normalized` (YOLO),
which validation resolves once it knows the image size.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from visiongate.datasets import safe_load
from visiongate.errors import DataError
from visiongate.paths import SPLITS  # noqa: F401 (re-exported: the formats use base.SPLITS)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

# Quarantine kinds: stable short strings, one per kind of bad input.
ZERO_BYTE = "zero_byte"                   # empty file
NOT_IMAGE = "not_an_image"                # image extension, but not an image
UNREADABLE = "unreadable_image"           # unreadable or truncated image
TOO_LARGE = "too_large"                   # over validation.max_pixels (header), huge outline
SIZE_MISMATCH = "size_mismatch"           # annotation's image size != the image's
MASK_MISMATCH = "mask_size_mismatch"      # mask size != image size
CLIPPED = "clipped"                       # box slightly outside: clipped, kept
BOX_OUTSIDE = "box_outside"               # box further outside than the clip tolerance
DEGENERATE = "degenerate_box"             # zero or negative width/height
TINY_BOX = "tiny_box"                     # under validation.min_box_px wide or high
NON_FINITE = "non_finite"                 # NaN / inf coordinate
UNKNOWN_CLASS = "unknown_class"           # class id out of range or unknown class name
MALFORMED = "malformed"                   # unparsable line / XML / JSON
SHORT_POLYGON = "short_polygon"           # polygon with fewer than 3 points
DUPLICATE = "duplicate_box"               # exact duplicate: removed, first kept
MISSING_LABEL = "missing_label"           # image without label file: kept as background
MISSING_IMAGE = "missing_image"           # annotation without image: left out
SYMLINK = "symlink"                       # symbolic link (file or folder): not followed
OUTSIDE = "outside_source"                # annotation names a path outside the source
SPECIAL_FILE = "special_file"             # FIFO, socket or device: never opened
# Image-label sources (folders, csv; checked in visiongate/datasets/validate_labels.py):
EMPTY_CLASS = "empty_class"               # a class with no usable image
DUPLICATE_IMAGE = "duplicate_image"       # same bytes (or CSV row) again, same labels: first kept
CONFLICTING_LABELS = "conflicting_labels" # same bytes with different labels: all copies out
SPLIT_LEAK = "split_leak"                 # same bytes in two source splits: held-out copy kept

# What happened to the item a quarantine line is about.
IMAGE_LEFT_OUT = "image_left_out"
OBJECT_LEFT_OUT = "object_left_out"
FILE_LEFT_OUT = "file_left_out"
CLASS_LEFT_OUT = "class_left_out"
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
    labels: list[int] | None = None            # image-level category ids (folders, csv)


@dataclass
class Source:
    root: Path
    format: str
    classes: list[str]                         # category id k is classes[k - 1]
    items: list[Item]
    issues: list[Issue] = field(default_factory=list)
    mask_values: dict[int, int] | None = None  # mask folders: pixel value -> category id
    fixed_classes: bool = False                # classes from a names file: none is dropped

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


def held_out_first(split: str | None) -> int:
    """Sort key of a split when one of several copies is kept: test, val, train, none —
    held-out splits stay as the source defined them, the training copy goes."""
    return {"test": 0, "val": 1, "train": 2}.get(split or "", 3)


def split_of(path: Path, root: Path) -> str | None:
    """The split a folder on the way from root to path names (train2017, instances_val2017)."""
    for part in Path(relpath(path, root)).parts[:-1]:
        for word in re.findall(r"[a-z]+", part.lower()):
            if word in SPLIT_WORDS:
                return SPLIT_WORDS[word]
    return None


def walk(root: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    """os.walk that never follows a symbolic link: (folder, sub-folders, regular files),
    sorted; symlinked folders are not entered (so link loops cannot grow anything),
    symlinks and special files are not listed (`link_issues` reports them)."""
    if Path(root).is_symlink():
        return
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not (here / d).is_symlink())
        yield here, dirnames, sorted(f for f in filenames if is_regular(here / f))


def is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except (OSError, ValueError):  # ValueError: a NUL in the name
        return False


def files(root: Path, suffix: str) -> list[Path]:
    """Regular files named *suffix under root (hidden folders included), sorted."""
    return sorted(here / f for here, _, names in walk(root) for f in names
                  if f.lower().endswith(suffix))


def folders(root: Path) -> list[Path]:
    """root and every folder under it reached without a symbolic link, sorted."""
    return sorted(here for here, _, _ in walk(root))


def list_images(root: Path) -> list[Path]:
    """Every regular file with an image extension under root, sorted (hidden folders and
    symbolic links skipped)."""
    found = []
    for here, dirnames, filenames in walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(here / f for f in filenames if Path(f).suffix.lower() in IMAGE_EXTENSIONS)
    return sorted(found)


def inside(root: Path, path: Path) -> Path | None:
    """path (built as `root / name`, where an absolute name replaces root) normalised when
    it stays inside root, else None: `..` and absolute names that leave root are refused.
    Lexical: open the returned path, never the one given."""
    full = Path(os.path.normpath(path))
    return None if Path(os.path.relpath(full, root)).parts[:1] == ("..",) else full


def regular_file(root: Path, path: Path) -> Path | None:
    """path (built as `root / name`) when it is a regular file inside root reached without
    passing a symbolic link (`inside`, then each part checked), else None."""
    full = inside(root, path)
    if full is None:
        return None
    current = Path(root)
    for part in Path(os.path.relpath(full, root)).parts:
        current = current / part
        if current.is_symlink():
            return None
    return full if is_regular(full) else None


def link_issues(root: Path) -> list[Issue]:
    """One quarantine line per symbolic link (file or folder: never followed) and special
    file (FIFO, socket, device: never opened) under root."""
    issues = []
    for dirpath, dirnames, filenames in os.walk(root):  # never enters a symlinked folder
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            issue = skipped_entry(path, relpath(path, root))
            if issue is not None:
                issues.append(issue)
    return issues


def skipped_entry(path: Path, rel: str) -> Issue | None:
    """The quarantine line of a symlink or special file at path (None for a regular file
    or folder): images count as images left out, anything else as a file left out."""
    mode = path.lstat().st_mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    action = IMAGE_LEFT_OUT if path.suffix.lower() in IMAGE_EXTENSIONS else FILE_LEFT_OUT
    if stat.S_ISLNK(mode):
        return Issue(rel, SYMLINK, f"symbolic link to {os.readlink(path)!r}: not followed",
                     action)
    return Issue(rel, SPECIAL_FILE, "not a regular file (FIFO, socket or device): not read",
                 action)


NAMES_FILES = ("data.yaml", "dataset.yaml", "names.txt", "classes.txt", "labels.txt")


def read_names(root: Path) -> list[str] | None:
    """Class names from data.yaml `names` (list or {id: name}) or a names/classes file."""
    for name in NAMES_FILES:
        path = regular_file(root, root / name)  # a symlinked names file: not followed
        if path is None:
            continue
        if path.suffix == ".yaml":
            names = _yaml_names(path)
            if names is None:
                continue
        else:
            names = [line.strip() for line in safe_load.read_text(path).splitlines()]
            names = [line for line in names if line]
        if len(names) > safe_load.MAX_CLASSES:
            raise DataError(f"{path}: {len(names)} class names (at most {safe_load.MAX_CLASSES})")
        return [safe_load.class_name(n, f"{path}: class {k}") for k, n in enumerate(names)]
    return None


def _yaml_names(path: Path) -> list | None:
    """data.yaml `names` (list, or {id: name} in id order; None when absent), read bounded:
    no aliases/anchors, no huge values (safe_load.load_yaml)."""
    data = safe_load.load_yaml(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a YAML mapping with `names`")
    names = data.get("names")
    if isinstance(names, dict):
        by_id = {int(str(k)): v for k, v in names.items()
                 if not isinstance(k, bool) and re.fullmatch(r"\d{1,9}", str(k).strip())}
        if sorted(by_id) != list(range(len(names))):
            raise DataError(f"{path}: `names` ids must be 0..{len(names) - 1}, got "
                            f"{safe_load.short(list(names))}")
        return [by_id[k] for k in range(len(by_id))]
    if names is not None and not isinstance(names, list):
        raise DataError(f"{path}: `names` must be a list or a mapping")
    return names
