"""The exclusion list: label mistakes the user confirmed, left out of training.

`data/exclude/<dataset>.csv`, columns `split,file,annotation,reason`: one line per excluded
annotation (its COCO id) or image (annotation empty). Only train and val: the test split
is the pinned yardstick, never edited. The file is DVC-tracked (its own .dvc and md5, a
lineage tag of every model trained with it); the source data is never edited — the
retrain trains on a view without the excluded items (`exclude_view.py`).

Everything in the file is untrusted: its size and row count are bounded, each `file` must
be a relative POSIX path inside its split (no absolute path, no `..`, no backslash, no
control character), and entries are checked against the prepared split before use.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from visiongate.datasets import safe_load
from visiongate.datasets.coco import load_split
from visiongate.errors import DataError, NotFound

FIELDS = ("split", "file", "annotation", "reason")
EDITABLE_SPLITS = ("train", "val")
KIND = "excluded_suspect"  # its kind in the quarantine report
ACTION = "excluded"        # not image_left_out: never counted as quarantined (bad data)
MAX_BYTES = 8 * 2**20
MAX_ENTRIES = 100_000
MAX_FILE_CHARS = 1024
MAX_REASON_CHARS = 500
MAX_ANNOTATION_ID = 2**63 - 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Exclusion:
    """One excluded annotation (`annotation` = its COCO id) or whole image (None)."""

    split: str
    file: str
    annotation: int | None
    reason: str = ""

    @property
    def key(self) -> tuple[str, str, int]:
        return self.split, self.file, -1 if self.annotation is None else self.annotation

    @property
    def item(self) -> str:
        """`split/file[#annotation]`, as `--item` and `--clear` take it."""
        tail = "" if self.annotation is None else f"#{self.annotation}"
        return f"{self.split}/{self.file}{tail}"

    def row(self) -> list[str]:
        return [self.split, self.file, "" if self.annotation is None else str(self.annotation),
                self.reason]


def check_split(split: str) -> str:
    if split == "test":
        raise DataError("the test split is the pinned yardstick every model is scored on and "
                        "is never edited: exclude only train or val items")
    if split not in EDITABLE_SPLITS:
        raise DataError(f"split {safe_load.short(split)}: expected train or val")
    return split


def check_file(file: str) -> str:
    """file when it is a relative POSIX path of a file inside a split folder, else DataError."""
    what = f"file {safe_load.short(file)}"
    if not isinstance(file, str) or not file or len(file) > MAX_FILE_CHARS:
        raise DataError(f"{what}: expected a path of 1..{MAX_FILE_CHARS} characters")
    if _CONTROL.search(file) or "\\" in file:
        raise DataError(f"{what}: control characters and backslashes are not allowed")
    if file.startswith("/") or re.match(r"[A-Za-z]:", file):
        raise DataError(f"{what}: an absolute path; give it relative to the split folder "
                        "(e.g. images/000012.png)")
    parts = file.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise DataError(f"{what}: '..', '.' and empty parts are not allowed (it must lie "
                        "inside data/prepared/<dataset>/<split>/)")
    return str(PurePosixPath(file))


def check_annotation(text: str | int | None) -> int | None:
    """The COCO annotation id in `text` (None when empty: the whole image)."""
    if text is None or text == "":
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str) or not re.fullmatch(r"[0-9]{1,19}", text) or \
            int(text) > MAX_ANNOTATION_ID:
        raise DataError(f"annotation {safe_load.short(text)}: expected a COCO annotation id "
                        "(digits) or nothing (the whole image)")
    return int(text)


def check_reason(reason: str) -> str:
    if not isinstance(reason, str) or _CONTROL.search(reason) or len(reason) > MAX_REASON_CHARS:
        raise DataError(f"reason {safe_load.short(reason)}: one line of at most "
                        f"{MAX_REASON_CHARS} characters, no control characters")
    return reason.strip()


def entry(split: str, file: str, annotation: str | int | None, reason: str = "") -> Exclusion:
    """A checked Exclusion (DataError naming what is wrong)."""
    return Exclusion(check_split(split), check_file(file), check_annotation(annotation),
                     check_reason(reason))


def parse_item(item: str, reason: str = "") -> Exclusion:
    """`SPLIT/FILE[#ANNOTATION]`, e.g. `train/images/000012.png#57`, as an Exclusion."""
    if not isinstance(item, str) or "/" not in item:
        raise DataError(f"item {safe_load.short(item)}: expected SPLIT/FILE[#ANNOTATION], "
                        "e.g. train/images/000012.png#57")
    split, rest = item.split("/", 1)
    file, _, annotation = rest.rpartition("#") if "#" in rest else (rest, "", "")
    return entry(split, file, annotation, reason)


def read_list(path: Path) -> list[Exclusion]:
    """The entries of an exclusion list ([] when there is none); DataError naming the file
    and line for anything malformed."""
    path = Path(path)
    if path.is_symlink():
        raise DataError(f"{path} is a symbolic link: the exclusion list must be a plain file")
    if not path.exists():
        return []
    if not path.is_file():
        raise DataError(f"{path} is not a file")
    text = safe_load.read_bytes(path, MAX_BYTES).decode("utf-8", errors="replace")
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next(rows, None)
    if header is None:
        return []
    if tuple(header) != FIELDS:
        raise DataError(f"{path}: the header must be {','.join(FIELDS)}, found "
                        f"{safe_load.short(','.join(header))}")
    entries = []
    try:
        for row in rows:
            if not row:
                continue
            if len(entries) >= MAX_ENTRIES:
                raise DataError(f"more than {MAX_ENTRIES} entries")
            if len(row) != len(FIELDS):
                raise DataError(f"expected {len(FIELDS)} fields, found {len(row)}")
            entries.append(entry(*row))
    except (DataError, csv.Error) as err:
        raise DataError(f"{path} line {rows.line_num}: {err}") from None
    return dedupe(entries)


def dedupe(entries: Iterable[Exclusion]) -> list[Exclusion]:
    """One entry per (split, file, annotation), the first kept, sorted by that key."""
    seen: dict[tuple, Exclusion] = {}
    for e in entries:
        seen.setdefault(e.key, e)
    return sorted(seen.values(), key=lambda e: e.key)


def write_list(path: Path, entries: Iterable[Exclusion]) -> None:
    """Write the list (deduped, sorted: the same entries give the same bytes and md5)
    atomically: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        raise DataError(f"{path} is a symbolic link: refusing to write through it")
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELDS)
    writer.writerows(e.row() for e in dedupe(entries))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(out.getvalue(), encoding="utf-8")
    os.replace(tmp, path)


def remove(entries: list[Exclusion], item: str) -> list[Exclusion]:
    """entries without `item` (SPLIT/FILE[#ANNOTATION]); NotFound when it is not listed."""
    key = parse_item(item).key
    kept = [e for e in entries if e.key != key]
    if len(kept) == len(entries):
        raise NotFound(f"{safe_load.short(item)} is not in the exclusion list")
    return kept


def check_entries(prepared_root: Path, entries: Iterable[Exclusion]) -> None:
    """DataError unless every entry names an image of its prepared split (a plain file in
    the split folder) and, when it has one, an annotation of that image."""
    prepared_root, problems, splits = Path(prepared_root), [], {}
    for e in entries:
        if e.split not in splits:
            splits[e.split] = _index(prepared_root / e.split)
        images, folder = splits[e.split], prepared_root / e.split
        found = images.get(e.file)
        path = folder / e.file
        if found is None:
            problems.append(f"{e.item}: no such image in {e.split}/annotations.json")
        elif path.is_symlink() or not path.is_file() or \
                not os.path.abspath(path).startswith(os.path.abspath(folder) + os.sep):
            problems.append(f"{e.item}: not a plain file inside {folder}")
        elif e.annotation is not None and e.annotation not in found:
            problems.append(f"{e.item}: no annotation {e.annotation} on that image")
    if problems:
        raise DataError(f"{len(problems)} exclusion(s) point at nothing in {prepared_root}: "
                        + "; ".join(problems[:5]) + " — fix or remove them "
                        "(`visiongate data exclude NAME --clear SPLIT/FILE[#ANNOTATION]`)")


def _index(split_dir: Path) -> dict[str, set[int]]:
    """file_name -> ids of its annotations, for one prepared split."""
    if not (split_dir / "annotations.json").is_file():
        raise NotFound(f"no prepared split at {split_dir}: run `dvc repro` (or `visiongate "
                       "data import`) first")
    split = load_split(split_dir)
    return {str(image.get("file_name")): {a.get("id") for a in
                                          split.annotations.get(image.get("id"), [])}
            for image in split.images}


def quarantine_lines(entries: Iterable[Exclusion], masks: bool) -> list[tuple[str, ...]]:
    """The quarantine report's lines (file, kind, detail, action) of the exclusions."""
    lines = []
    for e in entries:
        if e.annotation is None:
            what = "whole image"
        elif masks:
            what = (f"annotation {e.annotation} (the dataset has masks: the whole image is left "
                    "out of training)")
        else:
            what = f"annotation {e.annotation}"
        lines.append((f"{e.split}/{e.file}", KIND, f"{what}: {e.reason or 'no reason given'}",
                      ACTION))
    return lines


def write_report(prepared_report: Path, out: Path, lines: list[tuple[str, ...]]) -> Path:
    """The prepared quarantine report (a DVC output: only read) with `lines` added, at out."""
    from visiongate.datasets.formats.base import Issue
    from visiongate.datasets.validate import read_quarantine, write_quarantine

    write_quarantine(read_quarantine(prepared_report) + [Issue(*line) for line in lines], out)
    return out
