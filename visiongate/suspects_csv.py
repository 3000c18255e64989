"""The suspects file: what a retrain run logs (MLflow artifact `suspects/suspects.csv`) and
what `visiongate data review` / `data exclude --run` read back.

Columns `split,file,annotation,kind,score,detail,model_box`: split train or val; file
relative to the split folder (for a crops model: the crop's source image); annotation the
COCO annotation id, empty for an image-level row or a missing box; score in [0, 1], lower =
more suspect; model_box "x0 y0 x1 y1" (the model's box behind the row) or empty. A file
without the model_box column is read too.

The file comes from a run's artifact store: untrusted. Its size and row count are bounded,
each row is checked (split, path, annotation id, kind, finite score, box) and its text
keeps no control character (replaced by ?).
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

from visiongate.datasets import exclude, safe_load
from visiongate.errors import DataError, NotFound

ARTIFACT = "suspects/suspects.csv"
KINDS = ("swapped_class", "missing_box", "badly_placed", "wrong_label", "bad_mask")
HEADER = ("split", "file", "annotation", "kind", "score", "detail", "model_box")
SPLITS = ("train", "val")
MAX_CSV_BYTES = 64 * 2**20
MAX_ROWS = 200_000
MAX_DETAIL = 500
ISSUE_SCORE = 0.1  # below it a row counts as a likely mistake (cleanlab's issue threshold)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Suspect:
    split: str
    file: str                    # file_name relative to the split dir (a crop's source image)
    annotation: int | None       # COCO annotation id; None: image-level, or a missing box
    kind: str                    # one of KINDS
    score: float                 # label quality in [0, 1]; lower = more suspect
    detail: str                  # what the model sees instead, in words
    model_box: Box | None = None  # the model's box behind the row (xyxy px), if any

    @property
    def item(self) -> str:
        """SPLIT/FILE#ANNOTATION (or SPLIT/FILE): how `data exclude --item` names it."""
        tail = "" if self.annotation is None else f"#{self.annotation}"
        return f"{self.split}/{self.file}{tail}"


def printable(text: str, limit: int = 60) -> str:
    """text on one line, control characters (terminal escapes) replaced, cut to limit."""
    return safe_load.cut(_CONTROL.sub("?", str(text)), limit)


def write_suspects(rows: list[Suspect], path: Path) -> Path:
    """CSV with HEADER; score to 4 decimals."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for r in rows:
            box = "" if r.model_box is None else " ".join(f"{v:g}" for v in r.model_box)
            writer.writerow([_CONTROL.sub("?", r.split), _CONTROL.sub("?", r.file),
                             "" if r.annotation is None else r.annotation, r.kind,
                             f"{r.score:.4f}", printable(r.detail, MAX_DETAIL), box])
    return path


def _box(text: str) -> Box | None:
    try:
        coords = [float(v) for v in text.split()]
    except ValueError:
        coords = [math.nan]
    if len(coords) not in (0, 4) or not all(math.isfinite(v) for v in coords):
        raise DataError(f"model_box {safe_load.short(text)}: expected 4 finite numbers or "
                        "nothing")
    return tuple(coords) if coords else None  # type: ignore[return-value]


def _row(row: list[str], width: int) -> Suspect:
    if len(row) != width:
        raise DataError(f"expected {width} fields, found {len(row)}")
    split, file, annotation, kind, score, detail = row[:6]
    if split not in SPLITS:
        raise DataError(f"split {safe_load.short(split)}: expected train or val")
    if kind not in KINDS:
        raise DataError(f"kind {safe_load.short(kind)}: expected one of {', '.join(KINDS)}")
    try:
        value = float(score)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise DataError(f"score {safe_load.short(score)}: expected a number in [0, 1]")
    return Suspect(split, exclude.check_file(file), exclude.check_annotation(annotation), kind,
                   value, printable(detail, MAX_DETAIL), _box(row[6]) if width > 6 else None)


def read_suspects(path: Path) -> list[Suspect]:
    """The rows of a suspects CSV, most suspect (lowest score) first; DataError naming the
    file and line for anything malformed, NotFound without a file."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"no suspects file at {path}")
    rows = csv.reader(io.StringIO(safe_load.read_text(path, MAX_CSV_BYTES), newline=""))
    found: list[Suspect] = []
    try:
        header = tuple(h.strip() for h in next(rows, ()))
        if header not in (HEADER, HEADER[:6]):
            raise DataError(f"the header must be {','.join(HEADER)}")
        for row in rows:
            if not row:
                continue
            if len(found) >= MAX_ROWS:
                raise DataError(f"more than {MAX_ROWS} rows")
            found.append(_row(row, len(header)))
    except (DataError, csv.Error) as err:
        raise DataError(f"{path} line {rows.line_num}: {safe_load.cut(err, 300)}") from None
    return sorted(found, key=lambda s: s.score)  # stable: the file's order among equals
