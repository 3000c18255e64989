"""Class lists that change between a champion and its candidate.

A re-import may add, drop or rename classes (`visiongate data import` keeps the ids of the
classes that stay: visiongate.datasets.class_ids). The gate then compares the two models
on what both know, and only there:

- **renumbered**: a class both know under different ids (a class before it was dropped, or
  the list reordered). A client that reads label ids would silently get other classes, so
  the candidate is never promoted automatically; the report says which ids moved.
- **added** (the candidate's alone; a rename counts as one dropped and one added): its AP is
  in the candidate's metrics and the report, and no non-regression check applies to it.
- **dropped** (the champion's alone): nothing to score on this split.
- **the comparison view**: the test images holding only classes both know — an image
  with an object, a label or a mask pixel of a class only one of them knows is left out
  for both, so neither is scored on a class it never learned. Each model gets the view
  with its own class list (the same ids for the classes both know).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from visiongate.datasets.coco import link_or_copy, load_split, read_semantic_mask
from visiongate.errors import DataError


@dataclass(frozen=True)
class ClassChange:
    added: tuple[str, ...]
    dropped: tuple[str, ...]
    renumbered: tuple[tuple[str, int, int], ...]   # (name, champion id, candidate id)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.dropped or self.renumbered)

    def describe(self, version: str) -> str:
        parts = []
        if self.added:
            parts.append(f"new since champion v{version}: {', '.join(self.added)} "
                         "(AP shown; no non-regression check on them)")
        if self.dropped:
            parts.append(f"gone since champion v{version}: {', '.join(self.dropped)}")
        if self.renumbered:
            moved = ", ".join(f"{n!r} {a}→{b}" for n, a, b in self.renumbered)
            parts.append(f"renumbered since champion v{version}: {moved}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Compared:
    """The candidate's metrics on the comparison view, and the report's line about it."""

    metrics: dict[str, float]
    note: str


def compare(champion: list[str] | tuple[str, ...],
            candidate: list[str] | tuple[str, ...]) -> ClassChange:
    """What changed from the champion's class list to the candidate's (ids are 1-based
    positions, as in the canonical layout)."""
    theirs = {name: k for k, name in enumerate(champion, start=1)}
    ours = {name: k for k, name in enumerate(candidate, start=1)}
    return ClassChange(tuple(n for n in candidate if n not in theirs),
                       tuple(n for n in champion if n not in ours),
                       tuple((n, theirs[n], ours[n]) for n in candidate
                             if n in theirs and theirs[n] != ours[n]))


def renumbered_problem(change: ClassChange, version: str) -> str:
    moved = ", ".join(f"{n!r} {a}→{b}" for n, a, b in change.renumbered)
    return (f"class ids changed since champion v{version} ({moved}): a client reading label "
            "ids would silently get other classes")


def _foreign(split, image: dict, known: set[int], labels_only: bool) -> bool:
    """Whether the image holds an object, label or mask pixel of a category not in `known`."""
    if any(a.get("category_id") not in known for a in split.annotations.get(image["id"], [])):
        return True
    if "labels" in image and any(k not in known for k in image["labels"]):
        return True
    if not labels_only and split.mask_path(image).is_file():
        values = np.unique(read_semantic_mask(split, image))
        return any(int(v) not in known for v in values if v != 0)
    return False


def comparison_views(split_dir: Path, champion: tuple[str, ...], out_dir: Path) -> \
        tuple[Path, Path, int, int]:
    """(the candidate's view, the champion's view, images kept, images in the split) of a
    split whose classes are the candidate's: written under out_dir (replaced). Needs no
    renumbering (`compare(...).renumbered` empty): the classes both know have one id."""
    split = load_split(Path(split_dir))
    common = set(split.class_names) & set(champion)
    ids = {c["id"] for c in split.categories if c["name"] in common}
    labels_only = any("labels" in image for image in split.images)
    kept = [im for im in split.images if not _foreign(split, im, ids, labels_only)]
    if not kept:
        raise DataError(f"no test image of {split_dir} holds only classes the champion also "
                        f"knows ({', '.join(sorted(common)) or 'none'})")
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    mine = _write_view(split, kept, split.categories, out_dir / "candidate")
    theirs = _write_view(split, kept, [{"id": k, "name": n, "supercategory": ""}
                                       for k, n in enumerate(champion, start=1)],
                         out_dir / "champion")
    return mine, theirs, len(kept), len(split.images)


def _write_view(split, images: list[dict], categories: list[dict], out: Path) -> Path:
    annotations = [a for im in images for a in split.annotations.get(im["id"], [])]
    for image in images:
        link_or_copy(split.image_path(image), out / image["file_name"])
        if split.mask_path(image).is_file():
            link_or_copy(split.mask_path(image), out / "masks" / split.mask_path(image).name)
    (out / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": categories},
        separators=(",", ":")))
    return out
