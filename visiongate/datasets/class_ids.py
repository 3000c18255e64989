"""Class ids that stay put across re-imports.

`visiongate data import` of a dataset that was imported before writes the class list in
use (data/prepared/NAME/info.json `classes`, ids 1..K in that order) to
`data/classes/NAME.txt` — one name per line, git-tracked — and the prepare stage orders the
new source's classes by it: a class that stays keeps its id, whatever order the source
lists it in; a new class is appended (the next free id); a dropped class leaves the list,
and the classes after it move down one id each. That last case is reported at import and
is what the gate calls "renumbered" (visiongate.class_changes): a client reading label ids
would silently get other classes, so such a candidate is never promoted automatically.
Names are compared exactly: a renamed class is one dropped and one added.
"""

from __future__ import annotations

from pathlib import Path

from visiongate.datasets import safe_load
from visiongate.datasets.formats.base import Item, Source
from visiongate.errors import DataError


def read_reference(path: Path) -> list[str]:
    """The reference class list (bounded read; each name checked as the readers do)."""
    names = [line.strip() for line in safe_load.read_text(Path(path)).splitlines()]
    names = [n for n in names if n]
    if len(names) > safe_load.MAX_CLASSES:
        raise DataError(f"{path}: {len(names)} class names (at most {safe_load.MAX_CLASSES})")
    if len(set(names)) != len(names):
        raise DataError(f"{path}: a class name is listed twice")
    return [safe_load.class_name(n, f"{path}: class {k}") for k, n in enumerate(names)]


def keep_ids(source: Source, kept: list[Item], reference: list[str]) -> dict:
    """Reorder `source.classes` by `reference` and renumber every kept item's categories
    (objects, image labels, mask values) to match; return the changes for info.json."""
    ordered = [n for n in reference if n in source.classes] + \
              [n for n in source.classes if n not in reference]
    new_id = {old: ordered.index(name) + 1 for old, name in enumerate(source.classes, start=1)}
    if ordered != source.classes:
        for item in kept:
            for obj in item.objects:
                obj.category = new_id[obj.category]
            if item.labels is not None:
                item.labels = sorted(new_id[k] for k in item.labels)
        if source.mask_values is not None:
            source.mask_values = {v: new_id[k] for v, k in source.mask_values.items()}
        source.classes = ordered
    before = {n: k for k, n in enumerate(reference, start=1)}
    return {"added": [n for n in ordered if n not in before],
            "dropped": [n for n in reference if n not in ordered],
            "renumbered": [[n, before[n], k] for k, n in enumerate(ordered, start=1)
                           if n in before and before[n] != k]}


def describe(changes: dict) -> str:
    """One line for the import's summary; '' when nothing changed."""
    parts = []
    if changes.get("added"):
        parts.append("added " + ", ".join(changes["added"]))
    if changes.get("dropped"):
        parts.append("dropped " + ", ".join(changes["dropped"]))
    if changes.get("renumbered"):
        moved = ", ".join(f"{n} {a}→{b}" for n, a, b in changes["renumbered"])
        parts.append(f"ids moved: {moved} (the next retrain's gate will not promote "
                     "automatically: review, then `visiongate promote`)")
    return "classes since the last import: " + "; ".join(parts) if parts else ""
