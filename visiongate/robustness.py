"""Corrupted copies of a test split, for the robustness gate (night, blur, noise, fog).

Each corruption is a fixed albumentations pipeline per severity (1 = mild .. 3 = strong):
p=1.0 and every range collapsed to one value (lo == hi), so only what is inherently
random (noise pixels, fog particles) draws from the generator, which is seeded per image.
Corruptions are photometric only: boxes, polygons and masks stay valid, so
annotations.json and masks/ are copied unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import albumentations as A
import cv2
import numpy as np

from visiongate.datasets import safe_load
from visiongate.errors import DataError, NotFound
from visiongate.vocab import CORRUPTION_NAMES, SEVERITIES, check_corruption  # noqa: F401

# Written last into a finished copy: a folder without it is an interrupted run.
MARKER = ".visiongate-corruption.json"


def _low_light(severity: int) -> list[A.BasicTransform]:
    # Always darker, like an under-exposed night frame: scale every pixel down (contrast
    # -k is img * (1 - k), brightness 0 adds nothing), then gamma > 1 (x ** (gamma / 100)
    # on [0, 1]) pulls the mid-tones further down. Edges survive, just dimmer.
    scale = (-0.3, -0.5, -0.7)[severity - 1]
    gamma = (110, 125, 140)[severity - 1]
    return [A.RandomBrightnessContrast(brightness_limit=(0.0, 0.0),
                                       contrast_limit=(scale, scale), p=1.0),
            A.RandomGamma(gamma_limit=(gamma, gamma), p=1.0)]


def _blur(severity: int) -> list[A.BasicTransform]:
    kernel = (3, 5, 7)[severity - 1]
    sigma = (0.8, 1.5, 2.5)[severity - 1]
    return [A.GaussianBlur(blur_limit=(kernel, kernel), sigma_limit=(sigma, sigma), p=1.0)]


def _noise(severity: int) -> list[A.BasicTransform]:
    std = (0.04, 0.08, 0.15)[severity - 1]          # fraction of the 255 range
    return [A.GaussNoise(std_range=(std, std), mean_range=(0.0, 0.0), p=1.0)]


def _fog(severity: int) -> list[A.BasicTransform]:
    coef = (0.3, 0.5, 0.7)[severity - 1]
    return [A.RandomFog(fog_coef_range=(coef, coef), alpha_coef=0.08, p=1.0)]


CORRUPTIONS: dict[str, Callable[[int], list[A.BasicTransform]]] = {
    "low_light": _low_light,
    "blur": _blur,
    "noise": _noise,
    "fog": _fog,
}
assert tuple(CORRUPTIONS) == CORRUPTION_NAMES, "params.yaml's corruption names (vocab) differ"


def corruption_pipeline(name: str, severity: int, seed: int) -> A.Compose:
    """The deterministic pipeline for one image: same (name, severity, seed) -> same output."""
    check_corruption(name, severity)
    return A.Compose(CORRUPTIONS[name](severity), p=1.0, seed=seed)


def corrupt_image(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """A corrupted copy of an (H, W) or (H, W, C) uint8 image; the input is not modified."""
    gray = image.ndim == 2
    array = image[..., None] if gray else image
    out = corruption_pipeline(name, severity, seed)(image=np.ascontiguousarray(array))["image"]
    return out[..., 0] if gray else out


def _image_files(split_dir: Path) -> list[str]:
    """The split's image paths (relative, sorted) as annotations.json names them."""
    path = split_dir / "annotations.json"
    if not path.is_file():
        raise NotFound(f"no COCO annotations at {path}")
    coco = safe_load.load_json(path)  # bounded: size and nesting checked first
    images = coco.get("images", []) if isinstance(coco, dict) else None
    if not isinstance(images, list) or not all(
            isinstance(im, dict) and isinstance(im.get("file_name"), str) for im in images):
        raise DataError(f"{path}: `images` must be a list of objects with a file_name")
    return sorted({image["file_name"] for image in images})


def _marker(corruption: str, severity: int, seed: int) -> dict:
    return {"corruption": corruption, "severity": severity, "seed": seed,
            "albumentations": A.__version__}


def _is_complete(out_dir: Path, expected: dict) -> bool:
    marker = out_dir / MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()) == expected
    except json.JSONDecodeError:
        return False


def _write_copy(split_dir: Path, tmp_dir: Path, corruption: str, severity: int,
                seed: int) -> None:
    images = set(_image_files(split_dir))
    # Copy everything else unchanged (annotations.json, masks/, ...), then corrupt images.
    shutil.copytree(split_dir, tmp_dir, ignore=lambda d, names: [
        n for n in names
        if os.path.relpath(Path(d) / n, split_dir).replace(os.sep, "/") in images])
    for index, rel in enumerate(sorted(images)):
        src, dst = split_dir / rel, tmp_dir / rel
        safe_load.image_size(src)  # header first: nothing over the pixel limit is decoded
        image = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise DataError(f"cannot read image {src}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        # Seed per image index (sorted names): independent of processing order.
        if not cv2.imwrite(str(dst), corrupt_image(image, corruption, severity, seed + index)):
            raise OSError(f"cannot write image {dst}")


def corrupt_split(split_dir: Path, out_dir: Path, corruption: str, severity: int,
                  seed: int = 0) -> Path:
    """Write a corrupted copy of a split into out_dir and return out_dir.

    Images (as named in annotations.json) are corrupted; every other file is copied
    unchanged. split_dir is only read. An out_dir already holding a finished copy with the
    same (corruption, severity, seed) is reused as is — key out_dir by the split's md5 to
    cache; anything else at out_dir is replaced. The copy is built beside out_dir and
    renamed into place, so an interrupted run never leaves a folder that looks finished.
    """
    split_dir, out_dir = Path(split_dir).resolve(), Path(out_dir).resolve()
    check_corruption(corruption, severity)
    if out_dir == split_dir or split_dir in out_dir.parents or out_dir in split_dir.parents:
        raise ValueError(f"out_dir {out_dir} overlaps the source split {split_dir}: "
                         f"a corrupted copy never writes into the source")
    expected = _marker(corruption, severity, seed)
    if _is_complete(out_dir, expected):
        return out_dir
    tmp_dir = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    try:
        _write_copy(split_dir, tmp_dir, corruption, severity, seed)
        (tmp_dir / MARKER).write_text(json.dumps(expected, sort_keys=True))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp_dir.rename(out_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out_dir
