"""The raw copy of an import (data/raw/NAME): the source's regular files, modes and times
kept (copy2; folders keep theirs plus owner rwx, so the project can still replace them).

Symbolic links (files and folders) are never followed — a link cannot pull an outside
file in, and link loops cannot grow the copy — and special files (FIFOs, sockets,
devices) are never opened. Each one left out is a quarantine line in `SKIPPED` at the
copy's root, which the prepare stage reads back, so data/prepared/NAME/quarantine.csv
names it. The copy is written into a temporary sibling folder and renamed into place:
a copy that fails halfway leaves nothing behind.

    if not matches(src, Path("data/raw/NAME")):
        tmp, skipped = copy_regular(src, Path("data/raw"))
        backup = swap_in(tmp, Path("data/raw/NAME"))   # the replaced copy, or None
"""

from __future__ import annotations

import csv
import filecmp
import io
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from visiongate.datasets.formats import base
from visiongate.datasets.formats.base import Issue
from visiongate.datasets.validate import QUARANTINE_FIELDS, read_quarantine
from visiongate.errors import DataError

SKIPPED = ".visiongate-skipped.csv"  # quarantine lines of what the copy left out


@dataclass
class Plan:
    """What a copy of src holds: folders and regular files (relative, in walk order), and
    the quarantine lines of what it leaves out."""
    folders: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    skipped: list[Issue] = field(default_factory=list)


def plan(src: Path) -> Plan:
    """Walk src without following a link (a linked folder is never entered), in a fixed
    order, so the same source always gives the same copy and the same record."""
    found = Plan()

    def refuse(err: OSError):
        raise DataError(f"cannot read {err.filename} in the source: {err.strerror}")

    for dirpath, dirnames, filenames in os.walk(src, onerror=refuse):
        dirnames.sort()
        here = Path(dirpath)
        for name in sorted(dirnames + filenames):
            path, rel = here / name, base.relpath(here / name, src)
            issue = base.skipped_entry(path, rel)
            if issue is None and here == Path(src) and name == SKIPPED:
                issue = Issue(rel, base.MALFORMED, "a name the import keeps for its own "
                              "record; not copied", base.FILE_LEFT_OUT)
            if issue is not None:
                found.skipped.append(issue)
                if name in dirnames:
                    dirnames.remove(name)
            elif path.is_dir():
                found.folders.append(rel)
            else:
                found.files.append(rel)
    return found


def copy_regular(src: Path, parent: Path) -> tuple[Path, list[Issue]]:
    """Copy src's regular files and folders into a new temporary folder in parent; return
    (that folder, the quarantine lines of what was left out). Removes it on failure."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".import-", suffix=".partial", dir=parent))
    try:
        copied = plan(Path(src))
        _copy(Path(src), tmp, copied)
        if copied.skipped:
            (tmp / SKIPPED).write_bytes(_record(copied.skipped))
    except BaseException:
        remove(tmp)
        raise
    return tmp, copied.skipped


def matches(src: Path, raw: Path) -> bool:
    """Does raw hold what copy_regular(src) would write (same files, same bytes)?"""
    wanted = plan(Path(src))
    present = {base.relpath(here / f, raw) for here, _, names in base.walk(raw) for f in names}
    if present != set(wanted.files) | ({SKIPPED} if wanted.skipped else set()) \
            or base.link_issues(raw):
        return False
    if wanted.skipped and (raw / SKIPPED).read_bytes() != _record(wanted.skipped):
        return False
    return all(filecmp.cmp(src / rel, raw / rel, shallow=False) for rel in wanted.files)


def _record(skipped: list[Issue]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(QUARANTINE_FIELDS)
    writer.writerows((i.file, i.kind, i.detail, i.action) for i in skipped)
    return text.getvalue().encode()


def _copy(src: Path, dst: Path, copied: Plan) -> None:
    for rel in copied.folders:
        (dst / rel).mkdir()
    for rel in copied.files:
        _copy_file(src / rel, dst / rel, rel, copied.skipped)
    for rel in [*reversed(copied.folders), "."]:  # after their files: read-only modes kept
        shutil.copystat(src / rel, dst / rel, follow_symlinks=False)
        target = dst / rel
        target.chmod(stat.S_IMODE(target.stat().st_mode) | stat.S_IRWXU)  # stays removable


def _copy_file(path: Path, target: Path, rel: str, skipped: list[Issue]) -> None:
    """Bytes, mode and times (copy2); a file swapped for a link meanwhile is left out."""
    shutil.copy2(path, target, follow_symlinks=False)
    if target.is_symlink():
        target.unlink()
        skipped.append(Issue(rel, base.SYMLINK, "became a symbolic link while copied: not "
                             "followed", base.FILE_LEFT_OUT))


def swap_in(tmp: Path, raw: Path) -> Path | None:
    """Rename tmp to raw; a raw already there is first renamed aside and returned (the
    caller removes it once the import succeeded, or swaps it back)."""
    backup = None
    if raw.exists() or raw.is_symlink():
        backup = Path(tempfile.mkdtemp(prefix=f".{raw.name}-", suffix=".replaced",
                                       dir=raw.parent))
        backup.rmdir()
        raw.rename(backup)
    try:
        tmp.rename(raw)
    except BaseException:
        if backup is not None:
            backup.rename(raw)
        raise
    return backup


def skipped(root: Path) -> list[Issue]:
    """The quarantine lines the import's copy left at root (none for other sources)."""
    record = base.regular_file(Path(root), Path(root) / SKIPPED)
    return read_quarantine(record) if record is not None else []


def remove(path: Path) -> None:
    """Remove a folder this module wrote, read-only modes included."""
    def writable(function, name, _exc):
        os.chmod(os.path.dirname(name), stat.S_IRWXU)
        function(name)

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=writable)
