"""Request cells -> image files the model readers take, each checked before any decoding.

A cell is the base64 text of one image file. It is refused, as that row's own error
(RowRefused: reason and one-line message, never a path), when it is not base64, not an
image PIL can identify and verify, or larger than `max_pixels` by its header size: a
177-megapixel PNG of zeros is 29 KB on the wire and is refused without being decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from visiongate import serve_limits, upright
from visiongate.errors import DataError

SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}
Size = tuple[int, int]


class RowRefused(DataError):
    """One image of a request cannot be answered; `reason` says why in one word:
    not_base64 | unreadable | too_large | failed."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason

    def record(self, i: int) -> dict:
        """The row's answer."""
        return {"error": f"image {i}: {self}", "reason": self.reason}


def _open(data: bytes) -> Image.Image:
    """Pillow's own Image.open: ultralytics replaces it with one that may try to install
    a HEIF plugin on an unknown format (as datasets.safe_load)."""
    patches = sys.modules.get("ultralytics.utils.patches")
    return getattr(patches, "_image_open", Image.open)(io.BytesIO(data))


def readable_image(data: bytes, decode: bool = False,
                   max_pixels: int | None = None) -> tuple[str, Size]:
    """(file suffix, (width, height)) of encoded image bytes; RowRefused (a DataError) if
    unreadable, or over max_pixels by its header size (then nothing is decoded).

    By default the header and PNG chunk checksums are checked (`verify`: a truncated PNG
    fails, 50× cheaper than decoding a 640 px PNG twice per request); decode=True
    decodes every pixel, which also catches a truncated JPEG.
    """
    try:
        with _open(data) as im:
            suffix, (width, height) = SUFFIX.get(im.format, ""), im.size
            if max_pixels and width * height > max_pixels:
                raise RowRefused("too_large", f"image too large ({width}x{height} pixels; "
                                              f"at most {max_pixels}, serve.max_pixels)")
            if decode:
                im.load()
            else:
                im.verify()
            return suffix, (width, height)
    except RowRefused:
        raise
    # ImportError: should a patched Image.open still be reached, it answers an unknown
    # format by importing an optional HEIF plugin (visiongate keeps ultralytics offline)
    except (Image.UnidentifiedImageError, ImportError) as err:
        raise RowRefused("unreadable", "not a readable image (unknown format)") from err
    except Image.DecompressionBombError as err:
        raise RowRefused("too_large", "image too large (decompression bomb)") from err
    except Exception as err:  # PIL's plugins raise many kinds on malformed data
        reason = serve_limits.clean(str(err), 120)
        raise RowRefused("unreadable", f"not a readable image ({reason})") from err


def decode_cell(cell: Any) -> bytes:
    if isinstance(cell, bytes):
        return cell
    try:
        return base64.b64decode(str(cell))  # not validated: junk fails as an image
    except (binascii.Error, ValueError) as err:
        raise RowRefused("not_base64", f"`image` is not base64 text ({err})") from err


def stage(cell: Any, stem: Path, max_pixels: int | None) -> tuple[Path, Size]:
    """The cell's image as a file beside `stem` (its suffix added), and its size."""
    data = decode_cell(cell)
    suffix, size = readable_image(data, max_pixels=max_pixels)
    try:
        with _open(data) as im:
            plain = suffix and not upright.needs_rewrite(im)
    except Exception as err:  # it opened in readable_image: only a very odd file gets here
        raise RowRefused("unreadable", "not a readable image (cannot be opened)") from err
    if plain:
        path = stem.with_suffix(suffix)
        path.write_bytes(data)
        return path, size
    # a format the model readers may not know, an EXIF-rotated photo, 16-bit, CMYK ...:
    # hand them an upright 8-bit PNG, as the prepared training images are (upright.py)
    path = stem.with_suffix(".png")
    try:
        with _open(data) as im:
            image = upright.upright(im)
            image.save(path)
    except Exception as err:
        raise RowRefused("unreadable", "not a readable image (cannot be decoded)") from err
    return path, image.size


def batches(staged: dict[int, tuple[Path, Size]], max_pixels: int) -> list[list[int]]:
    """Row numbers in request order, grouped so that one group's images hold at most
    max_pixels together (one image alone may reach it): a request's decoded images are
    bounded by the pixel limit, not by rows x pixel limit."""
    groups: list[list[int]] = []
    total = max_pixels + 1
    for i, (_, (width, height)) in staged.items():
        if total + width * height > max_pixels:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += width * height
    return groups
