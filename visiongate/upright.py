"""Camera images: one convention for every reader — the image as it is displayed.

Labelling tools (CVAT, Label Studio, LabelImg) show a photo rotated by its EXIF
`Orientation` tag and store boxes in those displayed coordinates; ultralytics' `exif_size`
assumes the same. Readers do not agree on the pixels, though (Pillow ignores the tag,
OpenCV's imread applies it, its imdecode does not), and they convert 16-bit, CMYK,
palette and alpha images differently. So an image whose pixels readers could disagree on
— an EXIF orientation other than 1, or a mode other than 8-bit RGB or grayscale — is
rewritten once as an upright 8-bit PNG: at import (the prepared copy) and when a request
is served. Every consumer then sees the same pixels, in the coordinates the labels use.

Conversions: Orientation 2..8 applied (Pillow's `exif_transpose`); 16-bit and 32-bit
integer grayscale scaled by 1/256 (what OpenCV does to 16-bit), float clipped to 0..255;
alpha dropped (not composited, as OpenCV's colour read does); palette, CMYK and YCbCr
converted to RGB; two-level images to grayscale.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ORIENTATION = 0x0112
TRANSPOSED = frozenset({5, 6, 7, 8})  # orientations that swap width and height
PLAIN_MODES = frozenset({"RGB", "L"})


def orientation(im: Image.Image) -> int:
    """The EXIF orientation 1..8 (1: stored as displayed; a missing or bad tag counts as 1).
    Header only: a PNG's eXIf chunk counts when it precedes the pixels (as the PNG spec
    asks; Pillow would decode the whole image to look for a later one)."""
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        value = im.getexif().get(ORIENTATION, 1)
    except Exception:  # a malformed EXIF block: Pillow raises many kinds; the pixels stand
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def displayed_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) as displayed: the stored size, swapped for orientations 5..8."""
    width, height = im.size
    return (height, width) if orientation(im) in TRANSPOSED else (width, height)


def needs_rewrite(im: Image.Image) -> bool:
    return orientation(im) != 1 or im.mode not in PLAIN_MODES


def _eight_bit(im: Image.Image) -> Image.Image:
    if im.mode in PLAIN_MODES:
        return im
    if im.mode.startswith("I"):  # I;16, I;16B, I (16/32-bit integer grayscale)
        values = np.clip(np.asarray(im, dtype=np.int64), 0, 65535) >> 8
        return Image.fromarray(values.astype(np.uint8))
    if im.mode == "F":
        return Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8))
    if im.mode in ("1", "LA", "La"):
        return im.convert("L")
    return im.convert("RGB")  # P, PA, RGBA, RGBa, RGBX, CMYK, YCbCr, LAB, HSV


def upright(im: Image.Image) -> Image.Image:
    """The image as displayed, in 8-bit RGB or grayscale (decodes the pixels)."""
    if orientation(im) != 1:
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:  # a malformed EXIF block: keep the stored orientation
            pass
    return _eight_bit(im)


def displayed_file(path: Path, stem: Path, open_image: Callable = Image.open) -> Path:
    """path itself when every reader sees it alike, else an upright 8-bit PNG at
    stem + .png (for a reader such as batch prediction that takes files)."""
    with open_image(path) as im:
        if not needs_rewrite(im):
            return Path(path)
        out = stem.with_suffix(".png")
        upright(im).save(out)
        return out


def write_upright(src: Path, dst: Path, open_image: Callable = Image.open) -> Path:
    """Copy src to dst: its bytes as they are, or — when readers could disagree on its
    pixels — an upright 8-bit PNG at dst with suffix .png. Returns the file written."""
    out = displayed_file(src, dst, open_image)
    if out == Path(src):
        shutil.copyfile(src, dst)
        return dst
    return out
