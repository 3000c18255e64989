"""Corrupted copies of a split: same files and labels, changed pixels, deterministic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from visiongate.config import SynthConfig
from visiongate.datasets.synth import generate
from visiongate.robustness import CORRUPTIONS, MARKER, corrupt_split


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate(SynthConfig(image_size=64, splits={"train": 2, "val": 2, "test": 4}), root)
    return root / "test"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != MARKER}


def _md5(root: Path) -> str:
    digest = hashlib.md5()
    for name, data in _files(root).items():
        digest.update(name.encode() + data)
    return digest.hexdigest()


def _gray(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY)


def _images(root: Path) -> list[Path]:
    return sorted((root / "images").glob("*.png"))


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_copy_keeps_files_and_labels_and_changes_pixels(split, tmp_path, corruption):
    before = _md5(split)
    out = corrupt_split(split, tmp_path / corruption, corruption, severity=2)
    assert out == (tmp_path / corruption).resolve()
    source, copy = _files(split), _files(out)
    assert list(copy) == list(source)
    assert copy["annotations.json"] == source["annotations.json"]
    assert all(copy[n] == source[n] for n in source if n.startswith("masks/"))
    assert all(copy[n] != source[n] for n in source if n.startswith("images/"))
    assert _md5(split) == before                        # the source split is untouched
    assert json.loads((out / MARKER).read_text())["corruption"] == corruption


def test_low_light_darkens_and_blur_blurs(split, tmp_path):
    dark = corrupt_split(split, tmp_path / "dark", "low_light", 1)
    blurred = corrupt_split(split, tmp_path / "blur", "blur", 1)
    for src in _images(split):
        original = _gray(src)
        assert _gray(dark / "images" / src.name).mean() < 0.8 * original.mean()
        sharpness = cv2.Laplacian(original, cv2.CV_64F).var()
        assert cv2.Laplacian(_gray(blurred / "images" / src.name), cv2.CV_64F).var() < sharpness


def test_severity_scales(split, tmp_path):
    means = [np.mean([_gray(p).mean() for p in _images(
        corrupt_split(split, tmp_path / f"s{s}", "low_light", s))]) for s in (1, 2, 3)]
    assert means[0] > means[1] > means[2]


def test_deterministic_and_seeded(split, tmp_path):
    first = _files(corrupt_split(split, tmp_path / "a", "noise", 1, seed=3))
    assert _files(corrupt_split(split, tmp_path / "b", "noise", 1, seed=3)) == first
    assert _files(corrupt_split(split, tmp_path / "c", "noise", 1, seed=4)) != first


def test_reuses_a_complete_copy_and_replaces_an_incomplete_one(split, tmp_path):
    out = corrupt_split(split, tmp_path / "fog", "fog", 1)
    sentinel = out / "images" / "000000.png"
    sentinel.write_bytes(b"cached")
    corrupt_split(split, out, "fog", 1)                 # same parameters: reused as is
    assert sentinel.read_bytes() == b"cached"
    corrupt_split(split, out, "fog", 2)                 # other parameters: rebuilt
    assert sentinel.read_bytes() != b"cached"
    (out / MARKER).unlink()                             # interrupted: rebuilt
    sentinel.write_bytes(b"partial")
    corrupt_split(split, out, "fog", 2)
    assert sentinel.read_bytes() != b"partial" and (out / MARKER).is_file()
    assert not list(tmp_path.glob("*.tmp-*"))


def test_refuses_to_write_into_the_source(split):
    with pytest.raises(ValueError, match="overlaps the source"):
        corrupt_split(split, split / "corrupted", "blur", 1)
    with pytest.raises(ValueError, match="overlaps the source"):
        corrupt_split(split, split, "blur", 1)


def test_unknown_corruption_names_the_choices(split, tmp_path):
    with pytest.raises(ValueError, match="snow.*choose from"):
        corrupt_split(split, tmp_path / "x", "snow", 1)
    assert not (tmp_path / "x").exists()


def test_params_reject_an_unknown_corruption():
    from pydantic import ValidationError

    from visiongate.config import Params

    bad = {"detect": {"gate": {"robustness": {"metric": "map50", "corruptions": {"snow": 1}}}}}
    with pytest.raises(ValidationError, match="snow.*choose from.*blur.*fog.*low_light.*noise"):
        Params.model_validate(bad)
