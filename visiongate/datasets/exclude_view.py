"""The prepared dataset minus the exclusion list: what a model trains on once the user
has excluded confirmed label mistakes (`exclude.py`).

`<cache_root>/<dataset>-image-excl-<hash>/{train,val,test}`: train and val without the
excluded annotations, and without the images excluded as a whole; the test split as it
is. In a dataset with masks (semantic label maps, which hold every object's pixels) an
excluded annotation drops its whole image from train/val: the simplest rule that never
trains on the pixels of a label the user called wrong.

Derived and written once, atomically, like the crops view: the folder is named by a hash
of the entries and of the prepared splits (annotations bytes; each file's inode, size and
mtime, since images are hard-linked where the filesystem allows, copied otherwise). The
prepared dataset is only read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from visiongate.datasets import exclude, safe_load
from visiongate.datasets.coco import link_or_copy, load_split
from visiongate.datasets.exclude import Exclusion
from visiongate.errors import DataError
from visiongate.paths import SPLITS

VERSION = "1"  # bump when the rule changes: old views are not reused


def _files(folder: Path) -> list[Path]:
    """Regular files under folder, sorted; symbolic links are neither followed nor kept."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not (Path(dirpath) / d).is_symlink())
        found += [Path(dirpath) / f for f in sorted(filenames)
                  if not (Path(dirpath) / f).is_symlink()]
    return found


def fingerprint(prepared_root: Path, entries: list[Exclusion], masks: bool) -> str:
    digest = hashlib.sha256(f"{VERSION}\0{prepared_root.name}\0{masks}\0".encode())
    for e in exclude.dedupe(entries):
        digest.update(repr(e.key).encode())
    for path in _files(prepared_root):
        stat = path.stat()
        digest.update(f"{path.relative_to(prepared_root).as_posix()}\0{stat.st_ino}\0"
                      f"{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        if path.name == "annotations.json":
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _filtered(split_dir: Path, entries: list[Exclusion], masks: bool) -> tuple[dict, set[str]]:
    """(the split's COCO dict without the excluded items, files of the dropped images)."""
    split = load_split(split_dir)
    whole = {e.file for e in entries if e.annotation is None or masks}
    annotations = {(e.file, e.annotation) for e in entries if e.annotation is not None}
    images, dropped_files, kept = [], set(), []
    for image in split.images:
        if image.get("file_name") in whole:
            for path in (split.image_path(image), split.mask_path(image)):
                dropped_files.add(path.relative_to(split_dir).as_posix())
            continue
        images.append(image)
        kept += [a for a in split.annotations.get(image.get("id"), [])
                 if (image.get("file_name"), a.get("id")) not in annotations]
    if not images:
        raise DataError(f"the exclusion list leaves no image in {split_dir.name}: remove "
                        "some entries (`visiongate data exclude NAME --clear ...`)")
    coco = {**safe_load.load_json(split_dir / "annotations.json"),  # its other keys kept
            "images": images, "annotations": kept}
    return coco, dropped_files


def _write_split(split_dir: Path, out: Path, entries: list[Exclusion], masks: bool) -> None:
    if not entries:  # the test split, or a split without exclusions: as it is
        for path in _files(split_dir):
            link_or_copy(path, out / path.relative_to(split_dir))
        return
    coco, dropped = _filtered(split_dir, entries, masks)
    for path in _files(split_dir):
        rel = path.relative_to(split_dir).as_posix()
        if rel != "annotations.json" and rel not in dropped:
            link_or_copy(path, out / rel)
    (out / "annotations.json").write_text(json.dumps(coco))


def excluded_view(prepared_root: Path, cache_root: Path, entries: list[Exclusion],
                  masks: bool) -> Path:
    """The prepared dataset without the entries (itself when there are none), written on
    first use; DataError when an entry points at nothing in the prepared splits."""
    prepared_root = Path(prepared_root)
    if not entries:
        return prepared_root
    exclude.check_entries(prepared_root, entries)
    view = Path(cache_root) / (f"{prepared_root.name}-image-excl-"
                               f"{fingerprint(prepared_root, entries, masks)}")
    if (view / ".complete").is_file():
        return view
    partial = view.with_name(view.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for path in prepared_root.iterdir():  # info.json, quarantine.csv: as they are
        if path.is_file() and not path.is_symlink():
            link_or_copy(path, partial / path.name)
    for split in SPLITS:
        if (prepared_root / split / "annotations.json").is_file():
            mine = [e for e in entries if e.split == split]
            _write_split(prepared_root / split, partial / split, mine, masks)
    (partial / ".complete").touch()
    shutil.rmtree(view, ignore_errors=True)
    try:
        partial.rename(view)
    except OSError:  # another process finished the same view first
        shutil.rmtree(partial, ignore_errors=True)
        if not (view / ".complete").is_file():
            raise
    return view
