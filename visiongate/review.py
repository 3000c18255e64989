"""Suspected label mistakes read back for `visiongate data review` and `data exclude --run`
(the file itself: visiongate.suspects_csv)."""

from __future__ import annotations

from visiongate.datasets import exclude
from visiongate.datasets.exclude import Exclusion
from visiongate.suspects_csv import (ARTIFACT, ISSUE_SCORE, MAX_CSV_BYTES,  # noqa: F401
                                     Suspect, printable, read_suspects)

MAX_BYTES = MAX_CSV_BYTES


def table(suspects: list[Suspect]) -> str:
    """An aligned table: rank, item (split/file#annotation), kind, score, detail."""
    rows = [("#", "item", "kind", "score", "detail")]
    rows += [(str(i), printable(s.item, 80), s.kind, f"{s.score:.3f}", printable(s.detail))
             for i, s in enumerate(suspects, start=1)]
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    return "\n".join(("  ".join(r[c].ljust(widths[c]) for c in range(4)) + "  " + r[4]).rstrip()
                     for r in rows)


def exclusions(suspects: list[Suspect], top: int, run_id: str) -> list[Exclusion]:
    """The `top` most suspect rows as exclusion entries, the reason naming kind, score, run."""
    return [exclude.entry(s.split, s.file, s.annotation,
                          f"{s.kind} (score {s.score:.3f}, run {run_id})")
            for s in suspects[:top]]
