"""A CSV of image-level labels: `labels.csv` at the top of SRC (else the only non-hidden
`*.csv` there), with a header row.

    image,labels,split          (`labels`: class names separated by `;` — multi-label)
    img/a.png,cat;dog,train
    image,label                 (`label`: one class name)
    image,cat,dog               (one 0/1 column per class: one-hot or multi-hot)

The image column is the first of `image`, `file`, `filename`, `file_name`, `path`: a path
relative to SRC. A name leaving SRC (`..`, an absolute path) is `outside_source`, one
through a symbolic link `symlink` — never opened. `split` (optional) takes train / val /
test (and the words `base.SPLIT_WORDS` knows). Classes: a names file (`base.read_names`)
when there is one — then a name not in it is `unknown_class` — else every name seen,
sorted. A row without a label is `missing_label`; an image of SRC named by no row is a
`missing_label` line too (not part of the dataset). The same image in two rows: once
when the labels agree, `conflicting_labels` (left out) when they differ.

Bounds: a CSV over MAX_CSV_BYTES or MAX_ROWS lines (counted before parsing) is a one-line
error; a field over MAX_FIELD_CHARS makes its row `malformed`. Lines rows can multiply
(malformed, outside, missing, through a link) are listed up to MAX_LINES_PER_KIND per
kind, then counted in one line.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from visiongate.datasets import safe_load
from visiongate.datasets.formats import base
from visiongate.datasets.formats.base import Issue, Item, Source
from visiongate.errors import DataError

CSV_NAME = "labels.csv"
MAX_CSV_BYTES = 128 * 2**20
MAX_ROWS = 2_000_000
MAX_FIELD_CHARS = 4096
MAX_LINES_PER_KIND = 1000
IMAGE_COLUMNS = ("image", "file", "filename", "file_name", "path")


@dataclass
class _Row:
    line: int
    names: tuple[str, ...]
    split: str | None
    conflict: str = ""
    repeat: tuple[str, str] | None = None  # (kind, detail) of a repeated row, reported once


@dataclass(frozen=True)
class _Layout:
    width: int                 # fields in the header
    image: int
    split: int | None
    mode: str                  # "labels", "label" or "onehot"
    columns: list[int]         # the label column(s)
    names: list[str]           # one-hot: the class name of each column


class _Lines:
    """Quarantine lines rows can multiply: MAX_LINES_PER_KIND per kind, then a count."""

    def __init__(self, rel: str, issues: list[Issue]):
        self.rel, self.issues, self.counts = rel, issues, Counter()

    def add(self, kind: str, detail: str, action: str, file: str | None = None) -> None:
        self.counts[kind] += 1
        if self.counts[kind] <= MAX_LINES_PER_KIND:
            self.issues.append(Issue(file or self.rel, kind, detail, action))

    def close(self) -> None:
        for kind, n in sorted(self.counts.items()):
            if n > MAX_LINES_PER_KIND:
                self.issues.append(Issue(self.rel, kind, f"{n - MAX_LINES_PER_KIND} more lines "
                                         "of this kind, not listed", base.FILE_LEFT_OUT))


def find_csv(root: Path) -> Path:
    """labels.csv at the top of root, else the only non-hidden *.csv there (regular files)."""
    named = base.regular_file(root, root / CSV_NAME)
    if named is not None:
        return named
    found = [here / f for here, _, names in base.walk(root) for f in names
             if here == root and f.lower().endswith(".csv") and not f.startswith(".")]
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataError(f"{root}: no {CSV_NAME} (or single *.csv file) at the top of the "
                        "source (a symbolic link is not followed)")
    raise DataError(f"{root}: {len(found)} CSV files ({safe_load.short([p.name for p in found])})"
                    f"; name the labels file {CSV_NAME}")


def _read_rows(path: Path):
    """(line number, fields or None, error) for each row; DataError past the bounds."""
    size = path.lstat().st_size
    if size > MAX_CSV_BYTES:
        raise DataError(f"{path}: {size / 2**20:.0f} MiB, bigger than {MAX_CSV_BYTES // 2**20} "
                        "MiB")
    text = safe_load.read_text(path, MAX_CSV_BYTES).removeprefix("\ufeff")
    if text.count("\n") > MAX_ROWS + 1:
        raise DataError(f"{path}: more than {MAX_ROWS:,} rows")
    reader = csv.reader(io.StringIO(text))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield reader.line_num, None, safe_load.cut(str(err), 120)
            continue
        yield reader.line_num, row, ""


def _layout(path: Path, rows) -> _Layout:
    """The columns' roles, from the header row (DataError when unusable)."""
    _, header, err = next(rows, (0, None, "empty file"))
    if header is None or not any(h.strip() for h in header):
        raise DataError(f"{path}: no header row ({err or 'blank first line'})")
    if len(header) > safe_load.MAX_CLASSES + 8 or any(len(h) > MAX_FIELD_CHARS for h in header):
        raise DataError(f"{path}: header row too long ({len(header)} columns)")
    lower = [h.strip().lower() for h in header]
    image = next((lower.index(c) for c in IMAGE_COLUMNS if c in lower), None)
    if image is None:
        raise DataError(f"{path}: no image column; name one of {', '.join(IMAGE_COLUMNS)}")
    split = lower.index("split") if "split" in lower else None
    for mode in ("labels", "label"):
        if mode in lower:
            return _Layout(len(header), image, split, mode, [lower.index(mode)], [])
    columns = [k for k, h in enumerate(header) if k not in (image, split) and h.strip()]
    if not columns:
        raise DataError(f"{path}: no label column; give `labels`, `label` or one 0/1 column "
                        "per class")
    names = [safe_load.class_name(header[k].strip(), f"{path}: column {k + 1}") for k in columns]
    if len(set(names)) < len(names):
        raise DataError(f"{path}: a class column appears twice in the header")
    return _Layout(len(header), image, split, "onehot", columns, names)


def _names(row: list[str], layout: _Layout) -> list[str]:
    """Class names of a row; DataError (-> malformed) for a bad 0/1 value or a long name."""
    if layout.mode == "onehot":
        names = []
        for k, name in zip(layout.columns, layout.names):
            value = row[k].strip()
            if value not in ("0", "1", ""):
                raise DataError(f"column {safe_load.short(name)}: {safe_load.short(value)} is "
                                "not 0 or 1")
            if value == "1":
                names.append(name)
        return names
    cell = row[layout.columns[0]].strip()
    names = [n.strip() for n in cell.split(";")] if layout.mode == "labels" else [cell]
    names = [n for n in names if n]
    for name in names:
        safe_load.class_name(name, "a class name")
    return names


def _split(value: str) -> str | None:
    word = value.strip().lower()
    if word and word not in base.SPLIT_WORDS:
        raise DataError(f"split {safe_load.short(value)} is not train, val or test")
    return base.SPLIT_WORDS.get(word)


def _key(root: Path, name: str) -> str | None:
    """The image's path relative to root, or None when the name leaves root."""
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() \
            or PureWindowsPath(name).drive:
        return None
    full = base.inside(root, root / name)
    return None if full is None else base.relpath(full, root)


def _fields(row: list[str], layout: _Layout) -> tuple[str, list[str], str | None]:
    """(image name, class names, split) of a row; DataError says what is malformed."""
    if len(row) != layout.width:
        raise DataError(f"{len(row)} fields, the header has {layout.width}")
    if any(len(f) > MAX_FIELD_CHARS for f in row):
        raise DataError(f"a field longer than {MAX_FIELD_CHARS} characters")
    name = row[layout.image].strip()
    if not name or "\0" in name:
        raise DataError("no usable image path")
    split = _split(row[layout.split]) if layout.split is not None else None
    return name, _names(row, layout), split


def _repeat(first: _Row, row: _Row) -> None:
    """A second row for the same image: a conflict, a split leak or a plain repeat."""
    if first.names != row.names:
        first.conflict = first.conflict or (
            f"lines {first.line} and {row.line} give different labels "
            f"({safe_load.short(';'.join(first.names))} vs {safe_load.short(';'.join(row.names))})"
            "; left out")
    elif first.split != row.split:
        kept = min(first.split, row.split, key=base.held_out_first)
        first.repeat = first.repeat or (base.SPLIT_LEAK, (
            f"lines {first.line} and {row.line} put it in {first.split or 'no split'} and "
            f"{row.split or 'no split'}; kept in {kept or 'no split'} only"))
        first.split = kept
    else:
        first.repeat = first.repeat or (base.DUPLICATE_IMAGE,
                                        f"line {row.line} repeats line {first.line}; counted once")


def _rows_by_key(root: Path, rows, layout: _Layout, lines: _Lines) -> tuple[dict, set]:
    """({image key: its row}, every key a row named), malformed and outside rows reported."""
    by_key: dict[str, _Row] = {}
    named: set[str] = set()
    for line, row, err in rows:
        if row is not None and not any(f.strip() for f in row):
            continue
        try:
            if row is None:
                raise DataError(err)
            name, names, split = _fields(row, layout)
        except DataError as problem:
            lines.add(base.MALFORMED, f"line {line}: {problem}; left out", base.IMAGE_LEFT_OUT)
            continue
        key = _key(root, name)
        if key is None:
            lines.add(base.OUTSIDE, f"line {line}: {safe_load.short(name)} points outside the "
                      "source; not read", base.IMAGE_LEFT_OUT)
            continue
        named.add(key)
        entry = _Row(line, tuple(sorted(set(names))), split)
        if key in by_key:
            _repeat(by_key[key], entry)
        else:
            by_key[key] = entry
    return by_key, named


def _through_link(root: Path, key: str) -> bool:
    parts = PurePosixPath(key).parts
    return any(root.joinpath(*parts[:n]).is_symlink() for n in range(1, len(parts) + 1))


def _problem(row: _Row, ids: dict[str, int], rel: str) -> tuple[str, str] | None:
    """(kind, detail) when the row's image is left out for its labels."""
    if row.conflict:
        return base.CONFLICTING_LABELS, row.conflict
    if not row.names:
        return base.MISSING_LABEL, f"line {row.line} of {rel} gives no label; left out"
    unknown = [n for n in row.names if n not in ids]
    if unknown:
        return base.UNKNOWN_CLASS, (f"line {row.line}: class(es) {safe_load.short(unknown)} "
                                    "not in the names file")
    return None


def _items(root: Path, rel: str, by_key: dict[str, _Row], ids: dict[str, int],
           lines: _Lines) -> list[Item]:
    items = []
    for key, row in by_key.items():
        full = base.regular_file(root, root / key)
        if full is None:
            if _through_link(root, key):
                lines.add(base.SYMLINK, f"line {row.line} of {rel} names it through a symbolic "
                          "link; not followed", base.IMAGE_LEFT_OUT, file=key)
            else:
                lines.add(base.MISSING_IMAGE, f"line {row.line}: image {safe_load.short(key)} "
                          "not found (or not a regular file)", base.FILE_LEFT_OUT)
            continue
        if row.repeat:
            lines.issues.append(Issue(key, *row.repeat, base.FIXED))
        problem = _problem(row, ids, rel)
        if problem:
            lines.issues.append(Issue(key, *problem, base.IMAGE_LEFT_OUT))
            continue
        items.append(Item(full, key, row.split, labels=sorted(ids[n] for n in row.names)))
    return items


def read(root: Path) -> Source:
    path = find_csv(root)
    rel = base.relpath(path, root)
    issues: list[Issue] = []
    lines = _Lines(rel, issues)
    rows = _read_rows(path)
    layout = _layout(path, rows)
    by_key, named = _rows_by_key(root, rows, layout, lines)
    names = base.read_names(root)
    classes = names if names is not None else sorted(
        set(layout.names) | {n for row in by_key.values() for n in row.names})
    if len(classes) > safe_load.MAX_CLASSES:
        raise DataError(f"{path}: {len(classes)} classes (at most {safe_load.MAX_CLASSES})")
    items = _items(root, rel, by_key, {n: k for k, n in enumerate(classes, start=1)}, lines)
    issues += [Issue(base.relpath(image, root), base.MISSING_LABEL, f"not named in {rel}; "
                     "left out", base.FILE_LEFT_OUT)
               for image in base.list_images(root) if base.relpath(image, root) not in named]
    lines.close()
    return Source(root, "csv", list(classes), items, issues, fixed_classes=names is not None)
