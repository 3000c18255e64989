"""Helpers of the import-path tests: an "outside" folder the imports must never read, hostile
links, and snapshots proving a tree was neither read nor written.

The outside files carry MARKER (a PNG text chunk): a copy of one anywhere in a project
shows in `copies_of_outside`. Their access times are set in the past, so on a file
system that records reads (relatime does, for a file read after its last change) a read
shows in `atimes`; `reads_are_recorded` probes that first.
"""

from __future__ import annotations

import importlib.util
import os
import stat
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

TESTS = Path(__file__).resolve().parents[1]
MARKER = f"visiongate-outside-{uuid.uuid4().hex}".encode()
OLD = 1_000_000_000  # 2001: an access time every read moves forward


def load(path: Path, name: str):
    """A helper module by path (the conftest modules, whose `conftest` name is ambiguous)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


writers = load(TESTS / "conftest.py", "adversarial_writers")  # make_coco, make_voc, ...


def make_outside(root: Path) -> Path:
    """root/secret.png and root/folder/secret.png: valid images that carry MARKER."""
    info = PngImagePlugin.PngInfo()
    info.add_text("marker", MARKER.decode())
    for path in (root / "secret.png", root / "folder" / "secret.png"):
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(7).integers(0, 255, (48, 64, 3), np.uint8)
        Image.fromarray(pixels).save(path, pnginfo=info)
    (root / "secret.txt").write_text("0 0.5 0.5 0.2 0.2\n" + MARKER.decode() + "\n")
    age(root)
    return root


def age(root: Path) -> None:
    for path in entries(root):
        if path.is_file() and not path.is_symlink():
            st = path.stat()
            os.utime(path, ns=(OLD * 10**9, st.st_mtime_ns))


def add_links(src: Path, outside: Path) -> dict[str, str]:
    """A link to an outside file, to an outside folder, two links looping, a dangling one;
    returns {relative path: what it is}."""
    links = {"images/link.png": outside / "secret.png", "linked_folder": outside / "folder",
             "loop_a": Path("loop_b"), "loop_b": Path("loop_a"),
             "images/ghost.png": Path("no-such-file.png")}
    for rel, target in links.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).symlink_to(target, target_is_directory=rel != "images/link.png")
    return {rel: str(target) for rel, target in links.items()}


def entries(root: Path) -> list[Path]:
    """Every entry under root, links not followed (folders they name are not entered)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        found += [Path(dirpath) / n for n in dirnames + filenames]
    return sorted(found)


def modes(root: Path) -> dict[str, tuple[int, int, int]]:
    """rel -> (mode, size, mtime) of every entry, links not followed: the "not written" proof."""
    return {p.relative_to(root).as_posix(): (p.lstat().st_mode, p.lstat().st_size,
                                             p.lstat().st_mtime_ns) for p in entries(root)}


def atimes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.lstat().st_atime_ns for p in entries(root)
            if stat.S_ISREG(p.lstat().st_mode)}


def reads_are_recorded(tmp: Path) -> bool:
    probe = tmp / "atime-probe"
    probe.write_bytes(b"x")
    os.utime(probe, ns=(OLD * 10**9, probe.stat().st_mtime_ns))
    probe.read_bytes()
    recorded = probe.stat().st_atime_ns != OLD * 10**9
    probe.unlink()
    return recorded


def copies_of_outside(tree: Path) -> list[str]:
    """Regular files under tree (links not followed) that hold MARKER."""
    return [p.as_posix() for p in entries(tree)
            if stat.S_ISREG(p.lstat().st_mode) and MARKER in p.read_bytes()]
