"""Deterministic train/val/test assignment that keeps a source's own split.

Items are ordered by a seeded hash of their source path, so an item's place does not
depend on the order files were listed in, and adding a few images moves few others.
"""

from __future__ import annotations

import hashlib

from visiongate.datasets.formats.base import SPLITS, Item
from visiongate.errors import ConfigError

DEFAULT_RATIOS = {"train": 0.7, "val": 0.15, "test": 0.15}


def parse_ratios(text: str) -> dict[str, float]:
    """"train=0.7,val=0.15,test=0.15" -> {split: share}; ConfigError names the bad part."""
    ratios: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in SPLITS or not value:
            raise ConfigError(f"--split part {part!r}: expected SPLIT=SHARE with SPLIT in "
                              f"{', '.join(SPLITS)}")
        try:
            ratios[name] = float(value)
        except ValueError:
            raise ConfigError(f"--split part {part!r}: {value!r} is not a number") from None
        if not 0 <= ratios[name] <= 1:
            raise ConfigError(f"--split part {part!r}: share must be within 0..1")
    if set(ratios) != set(SPLITS) or abs(sum(ratios.values()) - 1) > 1e-6:
        raise ConfigError(f"--split {text!r}: give train, val and test shares summing to 1")
    return ratios


def _order(items: list[Item], seed: int) -> list[Item]:
    def key(item: Item) -> str:
        return hashlib.sha1(f"{seed}:{item.key}".encode()).hexdigest()
    return sorted(items, key=key)


def assign(items: list[Item], ratios: dict[str, float], seed: int) -> dict[str, list[Item]]:
    """{split: items}. Items keep their source split; a split the source lacks gets its
    share of all items, drawn (seeded) from the items without a split and the source's
    train split; the rest of those go to train."""
    out: dict[str, list[Item]] = {s: [] for s in SPLITS}
    pool = []
    for item in items:
        if item.split in SPLITS and item.split != "train":
            out[item.split].append(item)
        else:
            pool.append(item)
    present = {item.split for item in items if item.split in SPLITS}
    missing = [s for s in SPLITS if s not in present and s != "train"]
    pool = _order(pool, seed)
    for split in missing:
        take = round(ratios[split] * len(items))
        if ratios[split] > 0 and len(items) >= len(SPLITS):
            take = max(take, 1)
        out[split], pool = pool[:take], pool[take:]
    out["train"].extend(pool)
    for split in SPLITS:
        out[split].sort(key=lambda item: item.key)
    return out
