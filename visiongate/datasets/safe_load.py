"""Bounded readers for files from outside the code: every size, depth and count is checked
before anything is allocated from it, and every failure is a `DataError` naming the file.

    coco = load_json(path)                    # size and nesting depth checked before parsing
    names = load_yaml(path)                   # no aliases/anchors, no huge scalars or nesting
    w, h = image_size(path_or_bytes, limit)   # header only; ImageTooLarge over the pixel limit
    with pixel_limit(cfg.max_pixels): ...     # the limit (and Pillow's own) for an import

Limits (why these numbers):
- MAX_PIXELS 40 MP (~7300x5500, above 8K UHD's 33 MP): decoding an RGB image costs 3 B/px
  (120 MB), a float32 copy for augmentation 12 B/px (480 MB), the int64 label map of a mask
  8 B/px; with two of them in flight an import stays near 1 GB. `validation.max_pixels`.
- MAX_JSON_BYTES 512 MiB: COCO 2017 train instances (448 MB) is the biggest common file.
- MAX_DEPTH 64: COCO nests 5 deep; CPython's parser recurses once per level (RecursionError
  near 1000) and so does anything that later walks the parsed value.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import reprlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from visiongate.errors import DataError, NotFound

MAX_PIXELS = 40_000_000
MAX_JSON_BYTES = 512 * 2**20
MAX_TEXT_BYTES = 16 * 2**20        # one label file, VOC XML or names file
MAX_YAML_BYTES = 2**20
MAX_DEPTH = 64
MAX_SCALAR_CHARS = 4096            # one YAML scalar
MAX_NAME_CHARS = 256               # one class name
MAX_CLASSES = 10_000               # class ids without a names file; names in one
MAX_POLYGON_PERIMETER = 1_000_000  # px of outline; pycocotools needs ~52 B per px (measured)

_limit = {"pixels": MAX_PIXELS}


class ImageTooLarge(DataError):
    """An image whose width x height passes the pixel limit (found from its header)."""


def max_pixels() -> int:
    """The pixel limit in force (MAX_PIXELS unless inside `pixel_limit`)."""
    return _limit["pixels"]


@contextlib.contextmanager
def pixel_limit(limit: int) -> Iterator[None]:
    """Use `limit` as the pixel limit, and as Pillow's MAX_IMAGE_PIXELS, inside the block."""
    saved = _limit["pixels"], Image.MAX_IMAGE_PIXELS
    _limit["pixels"] = Image.MAX_IMAGE_PIXELS = int(limit)
    try:
        yield
    finally:
        _limit["pixels"], Image.MAX_IMAGE_PIXELS = saved


def _too_large(what, pixels: str, limit: int) -> ImageTooLarge:
    prefix = f"{what}: " if what else ""
    return ImageTooLarge(f"{prefix}{pixels} > the limit {limit / 1e6:g} MP "
                         "(validation.max_pixels)")


def check_pixels(size: tuple[int, int], what, limit: int | None = None) -> None:
    """ImageTooLarge (naming `what`, if given) when width x height passes the limit."""
    limit = max_pixels() if limit is None else limit
    if size[0] * size[1] > limit:
        raise _too_large(what, f"{size[0]}x{size[1]} = {size[0] * size[1] / 1e6:.1f} MP", limit)


@contextlib.contextmanager
def pixel_guard(what) -> Iterator[None]:
    """Around Image.open: Pillow's decompression-bomb error as ImageTooLarge naming `what`;
    its warning silenced (check_pixels, called next, applies the limit in force)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            yield
        except Image.DecompressionBombError as err:  # over twice Pillow's MAX_IMAGE_PIXELS
            found = re.search(r"\((\d+) pixels\)", str(err))
            pixels = f"{int(found[1]) / 1e6:.1f} MP" if found else "the image"
            raise _too_large(what, pixels, max_pixels()) from None


def _pillow_open(source):
    """Pillow's own Image.open (ultralytics replaces it with one that pip-installs plugins)."""
    patches = sys.modules.get("ultralytics.utils.patches")
    return getattr(patches, "_image_open", Image.open)(source)


def image_size(source, limit: int | None = None, what=None) -> tuple[int, int]:
    """(w, h) of an image (a path, bytes or a binary file) from its header alone:
    ImageTooLarge over the limit (default: max_pixels()), NotFound / DataError when it is
    missing or not an image. Serving and evaluation call this before decoding anything.
    `limit` can only lower the limit in force: Pillow itself refuses past twice that."""
    what = what or ("image" if isinstance(source, (bytes, bytearray)) else source)
    data = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with pixel_guard(what), _pillow_open(data) as image:
            size = image.size
    except FileNotFoundError:
        raise NotFound(f"{what}: no such file") from None
    except (OSError, SyntaxError, ValueError) as err:  # UnidentifiedImageError is an OSError
        if isinstance(err, DataError):
            raise
        raise DataError(f"{what}: not a readable image ({cut(err)})") from None
    check_pixels(size, what, limit)
    return size


def check_images(paths, limit: int | None = None) -> None:
    """image_size of each path (headers only): the first image over the limit is an error."""
    for path in paths:
        image_size(path, limit)


def read_bytes(path: Path, limit: int = MAX_TEXT_BYTES) -> bytes:
    """A file's bytes; DataError when it is bigger than `limit` (read at most limit + 1)."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise DataError(f"{path}: bigger than {limit / 2**20:g} MiB")
    return data


def read_text(path: Path, limit: int = MAX_TEXT_BYTES) -> str:
    return read_bytes(path, limit).decode("utf-8", errors="replace")


_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{}"')))


def json_depth(data: bytes, chunk: int = 1 << 22) -> int:
    """The deepest bracket nesting of JSON text (brackets inside strings skipped), without
    parsing it: C-speed passes (drop escapes, keep only brackets and quotes), then running
    sums over what is left, chunk by chunk (a bracket after an odd number of quotes is
    inside a string)."""
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")  # escapes end no string
    skeleton = data.translate(None, _NOT_STRUCTURE)
    depth = top = quotes = 0
    for start in range(0, len(skeleton), chunk):
        step = np.frombuffer(skeleton[start:start + chunk], np.uint8)
        quote = step == ord('"')
        outside = (np.cumsum(quote) - quote + quotes) % 2 == 0
        delta = (np.isin(step, (ord("["), ord("{"))).astype(np.int64)
                 - np.isin(step, (ord("]"), ord("}")))) * outside
        running = np.cumsum(delta) + depth
        top, depth = max(top, int(running.max())), int(running[-1])
        quotes += int(quote.sum())
    return top


def load_json(path: Path, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_DEPTH):
    """Parse a JSON file whose size and nesting are checked first; DataError names the file."""
    data = read_bytes(path, max_bytes)
    depth = json_depth(data)
    if depth > max_depth:
        raise DataError(f"{path}: JSON nested {depth} deep (more than {max_depth})")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError
        raise DataError(f"{path}: not valid JSON ({cut(err)})") from None


class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader without aliases or anchors (the "billion laughs"), bounded nesting and
    scalars."""

    depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise yaml.YAMLError("aliases and anchors are not allowed (line "
                                 f"{event.start_mark.line + 1})")
        if isinstance(event, yaml.ScalarEvent) and len(event.value) > MAX_SCALAR_CHARS:
            raise yaml.YAMLError(f"a value longer than {MAX_SCALAR_CHARS} characters")
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.YAMLError(f"nested more than {MAX_DEPTH} deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def load_yaml(path: Path, max_bytes: int = MAX_YAML_BYTES):
    """yaml.safe_load of a bounded file, refusing aliases/anchors; DataError names the file."""
    text = read_text(path, max_bytes)
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader subclass
    except (yaml.YAMLError, RecursionError) as err:
        raise DataError(f"{path}: not usable YAML ({cut(err)})") from None


def class_name(value, what) -> str:
    """A class name: a string or number of at most MAX_NAME_CHARS characters."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"{what}: a class name must be a string, not {type(value).__name__}")
    name = str(value)
    if len(name) > MAX_NAME_CHARS:
        raise DataError(f"{what}: a class name longer than {MAX_NAME_CHARS} characters")
    return name


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 6, 4, 60, 60


def short(value, limit: int = 80) -> str:
    """repr(value) cut to `limit` characters, for one-line messages about untrusted data."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def cut(text: str, limit: int = 200) -> str:
    """text cut to `limit` characters (messages quoting untrusted text stay one short line)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def rle_counts(counts) -> np.ndarray:
    """The run lengths of a COCO RLE: a list of non-negative ints, or the compressed string
    (decoded as pycocotools' rleFrString does, to uint32); DataError if malformed."""
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 2**32
                   for c in counts):
            raise DataError("RLE counts must be non-negative integers")
        return np.asarray(counts, np.int64)
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if not isinstance(counts, str):
        raise DataError(f"RLE counts must be a list or a string, not {type(counts).__name__}")
    chars = np.frombuffer(counts.encode("ascii", errors="replace"), np.uint8).astype(np.int64) - 48
    if not chars.size:
        return chars
    if chars.min() < 0 or chars.max() > 63 or chars[-1] & 0x20:
        raise DataError("RLE counts string is malformed")
    last = np.flatnonzero((chars & 0x20) == 0)             # the last character of each value
    first = np.concatenate([[0], last[:-1] + 1])
    position = np.arange(chars.size) - np.repeat(first, last - first + 1)
    if position.max() > 6:
        raise DataError("RLE counts string holds a value longer than 7 characters")
    value = np.add.reduceat((chars & 0x1F) << (5 * position), first)
    negative = (chars[last] & 0x10) != 0                    # sign-extend, as pycocotools does
    value = np.where(negative, value - (1 << (5 * (last - first + 1))), value)
    value[2::2] = np.cumsum(value[2::2])                    # counts[m] = x + counts[m - 2], m > 2
    value[1::2] = np.cumsum(value[1::2])
    return value & 0xFFFFFFFF


def check_rle(rle, what, size: tuple[int, int] | None = None) -> tuple[int, int]:
    """(h, w) of a COCO RLE dict whose run lengths add up to h * w (pycocotools decodes
    without bounds checks); with `size`, it must be that (h, w). DataError otherwise."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise DataError(f"{what}: an RLE must be a dict with size and counts")
    hw = rle["size"]
    if not (isinstance(hw, list) and len(hw) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31 for v in hw)):
        raise DataError(f"{what}: size {short(hw)} is not [height, width]")
    if size is not None and tuple(hw) != tuple(size):
        raise DataError(f"{what}: size {hw} != the image's [height, width] {list(size)}")
    try:
        total = int(rle_counts(rle["counts"]).sum())
    except DataError as err:
        raise DataError(f"{what}: {err}") from None
    if total != hw[0] * hw[1]:
        raise DataError(f"{what}: runs cover {total} pixels, its size {hw} has "
                        f"{hw[0] * hw[1]}")
    return hw[0], hw[1]


def polygon_perimeter(polygon: list[float]) -> float:
    """Sum over the closed polygon's edges of max(|dx|, |dy|): what pycocotools rasterises."""
    xy = np.asarray(polygon, np.float64).reshape(-1, 2)
    return float(np.abs(np.diff(xy, axis=0, append=xy[:1])).max(axis=1).sum()) if len(xy) else 0.0
