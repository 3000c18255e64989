"""Importers: read a source folder in one of the supported formats into a `Source`.

    source = read_source("yolo", Path("coco128-seg"))

Detection/segmentation: coco, yolo, voc, masks. Image-level labels (classification):
folders (ImageFolder), csv (a labels CSV) — their items carry `labels`, no objects.

Readers only parse, never follow a symbolic link and never open a path outside the
source; `visiongate.datasets.validate` checks images and coordinates, and
`visiongate.datasets.formats.canonical` writes the canonical layout.
"""

from __future__ import annotations

from pathlib import Path

from visiongate.datasets.formats import base, coco_json, csv_labels, folders, masks, voc, yolo
from visiongate.datasets.formats.base import Source
from visiongate.errors import DataError, NotFound

READERS = {"coco": coco_json.read, "yolo": yolo.read, "voc": voc.read, "masks": masks.read,
           "folders": folders.read, "csv": csv_labels.read}
FORMATS = tuple(READERS)


def read_source(fmt: str, src: Path) -> Source:
    """Parse src as format `fmt`; NotFound / DataError name what is wrong."""
    if fmt not in READERS:
        raise DataError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    src = Path(src)
    if not src.is_dir():
        raise NotFound(f"no source folder at {src}")
    if src.is_symlink():  # the folder the user named may be a link; nothing under it is
        src = src.resolve()
    source = READERS[fmt](src)
    source.issues[:0] = base.link_issues(src)  # readers skip these; the report names them
    return source
