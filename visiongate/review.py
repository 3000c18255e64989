"""Suspected label mistakes, as a retrain run logs them (MLflow artifact
`suspects/suspects.csv`), read back for `visiongate data review` and `data exclude --run`.

Columns `split,file,annotation,kind,score,detail` (later ones, e.g. `model_box`, are
ignored); score in [0, 1], lower = more suspect; `file` is relative to the split folder
(for a crops model: the crop's source image).
The file comes from a run's artifact store: untrusted. Its size and row count are bounded,
each row is checked (split, path, annotation id, finite score), and text is printed with
control characters replaced. (visiongate/suspects.py writes the file; this reader checks
it independently.)
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

from visiongate.datasets import exclude, safe_load
from visiongate.datasets.exclude import Exclusion
from visiongate.errors import DataError

ARTIFACT = "suspects/suspects.csv"
FIELDS = ("split", "file", "annotation", "kind", "score", "detail")
SPLITS = ("train", "val")
MAX_BYTES = 32 * 2**20
MAX_ROWS = 200_000
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Suspect:
    split: str
    file: str
    annotation: int | None
    kind: str
    score: float
    detail: str

    @property
    def item(self) -> str:
        tail = "" if self.annotation is None else f"#{self.annotation}"
        return f"{self.split}/{self.file}{tail}"


def _row(row: list[str], width: int) -> Suspect:
    if len(row) != width:
        raise DataError(f"expected {width} fields, found {len(row)}")
    split, file, annotation, kind, score, detail = row[:len(FIELDS)]
    if split not in SPLITS:
        raise DataError(f"split {safe_load.short(split)}: expected train or val")
    if not re.fullmatch(r"[a-z_]{1,40}", kind):
        raise DataError(f"kind {safe_load.short(kind)}: expected a word such as missing_box")
    try:
        value = float(score)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise DataError(f"score {safe_load.short(score)}: expected a number in [0, 1]")
    return Suspect(split, exclude.check_file(file), exclude.check_annotation(annotation), kind,
                   value, printable(detail, 500))


def read_suspects(path: Path) -> list[Suspect]:
    """The rows of a suspects CSV, most suspect (lowest score) first; DataError naming the
    file and line for anything malformed."""
    path = Path(path)
    text = safe_load.read_bytes(path, MAX_BYTES).decode("utf-8", errors="replace")
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next(rows, None)
    if header is None or tuple(h.strip() for h in header[:len(FIELDS)]) != FIELDS:
        raise DataError(f"{path}: the header must start with {','.join(FIELDS)}")
    found = []
    try:
        for row in rows:
            if not row:
                continue
            if len(found) >= MAX_ROWS:
                raise DataError(f"more than {MAX_ROWS} rows")
            found.append(_row(row, len(header)))
    except (DataError, csv.Error) as err:
        raise DataError(f"{path} line {rows.line_num}: {err}") from None
    return sorted(found, key=lambda s: s.score)  # stable: the file's order among equals


def printable(text: str, limit: int = 60) -> str:
    """text on one line, control characters (terminal escapes) replaced, cut to limit."""
    return safe_load.cut(_CONTROL.sub("?", str(text)), limit)


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
