"""Checks of items once their images are known to be readable: the same bytes twice (every
format), and, for image-label items (`--format folders` / `csv`), classes left without an
image.

- Same bytes (sha256) with different labels (e.g. one file under two class folders): the
  label is ambiguous, so every copy is left out, one `conflicting_labels` line each.
- Same bytes and labels (or, for boxes and masks, same bytes whatever their annotations):
  one copy is kept, the others are `duplicate_image` (fixed); copies in different source
  splits are `split_leak` — the held-out copy (test, then val) is kept so the split the
  source defined still scores unseen images. Dropping the repeats before splitting also
  keeps the seeded splitter from putting one photo in train and test.
- A class with no usable image is `empty_class`. It is dropped from the class list (ids
  renumbered), since a model can neither learn nor be scored on it — unless the classes
  come from a names file (`Source.fixed_classes`): the user's list, ids as declared, is
  kept and the line says so.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from pathlib import Path

from visiongate.datasets import safe_load
from visiongate.datasets.formats import base
from visiongate.datasets.formats.base import Issue, Item, Source

CHUNK = 1 << 20


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks through a descriptor that refuses a link."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _names(source: Source, labels: list[int]) -> str:
    return ";".join(source.classes[k - 1] for k in labels)


def _same_bytes(source: Source, copies: list[Item], issues: list[Issue]) -> list[Item]:
    """The copies kept of one set of identical files (none, or one)."""
    if len({tuple(item.labels or ()) for item in copies}) > 1:  # boxes/masks: no labels
        for item in copies:
            others = ", ".join(f"{c.key} ({_names(source, c.labels)})"
                               for c in copies if c is not item)
            issues.append(Issue(item.key, base.CONFLICTING_LABELS, safe_load.cut(
                f"same bytes as {others}, labelled {_names(source, item.labels)}: ambiguous; "
                "every copy left out"), base.IMAGE_LEFT_OUT))
        return []
    keep = min(copies, key=lambda item: (base.held_out_first(item.split), item.key))
    for item in copies:
        if item is keep:
            continue
        kind = base.SPLIT_LEAK if item.split != keep.split else base.DUPLICATE_IMAGE
        where = f" ({keep.split or 'no split'} vs {item.split or 'no split'})" \
            if kind == base.SPLIT_LEAK else ""
        issues.append(Issue(item.key, kind, f"same bytes as {keep.key}{where}; "
                            f"{keep.key} kept", base.FIXED))
    return [keep]


def drop_duplicates(source: Source, kept: list[Item], issues: list[Issue]) -> list[Item]:
    """kept without ambiguous or repeated copies (see the module doc), in the same order."""
    by_hash: dict[str, list[Item]] = defaultdict(list)
    for item in kept:
        try:
            by_hash[file_hash(item.image)].append(item)
        except OSError as err:  # replaced by a link or removed since it was checked
            issues.append(Issue(item.key, base.UNREADABLE, f"cannot read it again: "
                                f"{safe_load.cut(str(err), 120)}", base.IMAGE_LEFT_OUT))
    survivors = set()
    for copies in by_hash.values():
        chosen = copies if len(copies) == 1 else _same_bytes(source, copies, issues)
        survivors.update(id(item) for item in chosen)
    return [item for item in kept if id(item) in survivors]


def drop_empty_classes(source: Source, kept: list[Item], issues: list[Issue]) -> None:
    """Report classes without a kept image; unless fixed, drop them and renumber labels."""
    used = {k for item in kept for k in item.labels}
    empty = [k for k in range(1, len(source.classes) + 1) if k not in used]
    for k in empty:
        action, what = (base.KEPT, "kept: the names file lists it") if source.fixed_classes \
            else (base.CLASS_LEFT_OUT, "left out of the class list")
        name = source.classes[k - 1]
        issues.append(Issue(name, base.EMPTY_CLASS,
                            f"class {safe_load.short(name)} has no usable image; {what}", action))
    if source.fixed_classes or not empty:
        return
    new_ids = {old: new for new, old in enumerate(sorted(used), start=1)}
    source.classes = [source.classes[old - 1] for old in sorted(used)]
    for item in kept:
        item.labels = sorted(new_ids[k] for k in item.labels)


def check_image_labels(source: Source, kept: list[Item], issues: list[Issue]) -> list[Item]:
    """The image-label checks after validation: items kept (labels renumbered if needed)."""
    kept = drop_duplicates(source, kept, issues)
    drop_empty_classes(source, kept, issues)
    return kept
