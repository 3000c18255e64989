"""ImageFolder layout: one folder per class, the folder name is the class name.

    SRC/<class>/*.jpg                  split by the seeded splitter
    SRC/<split>/<class>/*.jpg          split folders: names made of `base.SPLIT_WORDS`
                                       (train, training, val2017, valid, validation, test)

Classes are the class folder names, sorted, over all splits. Images in sub-folders of a
class folder belong to that class. Each item gets `labels = [its class id]` (single-label).
An image outside any class folder is a `missing_label` line (not part of the dataset); a
folder beside split folders that is not a split is a `malformed` line. A class folder with
no usable image is reported and dropped by validation (`validate_labels`).
Hidden folders and files are skipped; symbolic links are never followed.
"""

from __future__ import annotations

import re
from pathlib import Path

from visiongate.datasets import safe_load
from visiongate.datasets.formats import base
from visiongate.datasets.formats.base import Issue, Item, Source
from visiongate.errors import DataError


def _entries(folder: Path) -> tuple[list[Path], list[Path]]:
    """(non-hidden sub-folders, images) directly in folder, no symbolic link, sorted."""
    for here, dirnames, filenames in base.walk(folder):
        return ([here / d for d in dirnames if not d.startswith(".")],
                [here / f for f in filenames if Path(f).suffix.lower() in base.IMAGE_EXTENSIONS])
    return [], []


def _subfolders(folder: Path) -> list[Path]:
    return _entries(folder)[0]


def _loose_images(folder: Path, root: Path, where: str) -> list[Issue]:
    """A missing_label line for each image directly in folder (not in a class folder)."""
    return [Issue(base.relpath(image, root), base.MISSING_LABEL,
                  f"image directly in {where}, not in a class folder; left out",
                  base.FILE_LEFT_OUT) for image in _entries(folder)[1]]


def split_name(name: str) -> str | None:
    """The split a top folder names when every word of it is a split word (`train`,
    `val2017`, `Validation`): a class folder such as `test_tube` stays a class."""
    words = {base.SPLIT_WORDS.get(w) for w in re.findall(r"[a-z]+", name.lower())}
    return words.pop() if len(words) == 1 and None not in words else None


def _split_folders(root: Path) -> dict[Path, str] | None:
    """{top folder: split} when the top level holds split folders, else None."""
    splits = {folder: split_name(folder.name) for folder in _subfolders(root)}
    return {f: s for f, s in splits.items() if s} or None


def read(root: Path) -> Source:
    issues: list[Issue] = _loose_images(root, root, "the source folder")
    by_split = _split_folders(root)
    if by_split is None:
        class_dirs = [(folder, None) for folder in _subfolders(root)]
    else:
        class_dirs = []
        for folder in _subfolders(root):
            if folder not in by_split:
                count = len(base.list_images(folder))
                issues.append(Issue(base.relpath(folder, root), base.MALFORMED,
                                    f"folder beside the split folders is not a split "
                                    f"(train/val/test): its {count} image(s) left out",
                                    base.FILE_LEFT_OUT))
                continue
            issues += _loose_images(folder, root, f"split folder {folder.name!r}")
            class_dirs += [(c, by_split[folder]) for c in _subfolders(folder)]
    names = sorted({safe_load.class_name(folder.name, f"{root}: class folder")
                    for folder, _ in class_dirs})
    if len(names) > safe_load.MAX_CLASSES:
        raise DataError(f"{root}: {len(names)} class folders (at most {safe_load.MAX_CLASSES})")
    ids = {name: k for k, name in enumerate(names, start=1)}
    items = [Item(image, base.relpath(image, root), split, labels=[ids[folder.name]])
             for folder, split in class_dirs for image in base.list_images(folder)]
    return Source(root, "folders", names, items, issues)
