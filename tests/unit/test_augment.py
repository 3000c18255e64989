"""Augmentation from params.yaml: validation, boxes kept in the image, masks kept aligned,
the preview grid and its CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from flows.cli import main
from visiongate import augment
from visiongate.config import (ClassifyConfig, DetectConfig, Params, SegmentConfig, SynthConfig,
                               check_deep)
from visiongate.datasets.synth import generate
from visiongate.errors import ConfigError
from visiongate.models.samples import load_samples

# Exact (nearest-neighbour) spatial transforms, so image and mask pixels must still coincide.
SPATIAL = [{"name": "Affine", "rotate": [-40, 40], "scale": [0.7, 1.4], "translate_percent": [-0.2, 0.2],
            "interpolation": 0, "mask_interpolation": 0, "p": 1.0},
           {"name": "HorizontalFlip", "p": 0.5}, {"name": "RandomRotate90", "p": 0.5}]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    generate(SynthConfig(seed=5, image_size=64, splits={"train": 12}), root / "data/prepared/shapes")
    (root / "params.yaml").write_text(yaml.safe_dump({"dataset": "shapes"}))
    return root


def _painted(sample: dict, layer: np.ndarray) -> dict:
    """The sample with its image's red channel = 255 where `layer` is set, else 0."""
    image = sample["image"].copy()
    image[..., 0] = np.where(layer > 0, 255, 0)
    return {**sample, "image": image}


def test_unknown_transform_names_the_choices_and_a_close_match():
    params = Params(detect=DetectConfig(augment=[{"name": "HorizontalFlop"}]))  # loads: no torch
    with pytest.raises(ConfigError, match=r"detect.augment\[0\]: .*HorizontalFlop.*"
                                          "did you mean HorizontalFlip.*choose from"):
        check_deep(params)


@pytest.mark.parametrize("step,match", [
    ({"name": "Blur", "blurlimit": 3}, r"unknown argument\(s\) \['blurlimit'\].*blur_limit"),
    ({"name": "Rotate", "limit": "lots"}, "Rotate: bad argument"),
    ({"p": 0.5}, "mapping with a `name`"),
])
def test_bad_arguments_fail_the_deep_check(step, match):
    with pytest.raises(ConfigError, match=match):
        check_deep(Params(segment=SegmentConfig(augment=[step])))


def test_boxes_stay_inside_the_image(project):
    samples, _ = load_samples(project / "data/prepared/shapes/train", "detect")
    compose = augment.pipeline(SPATIAL, "detect", seed=0)
    kept = 0
    for _ in range(3):
        for sample in samples:
            out = augment.apply(compose, "detect", **sample)
            h, w = out["image"].shape[:2]
            boxes = out["boxes"]
            assert np.all(boxes >= 0) and np.all(boxes[:, [0, 2]] <= w) and np.all(boxes[:, [1, 3]] <= h)
            assert np.all(boxes[:, 2:] > boxes[:, :2]) and len(out["labels"]) == len(boxes)
            assert set(out["labels"]) <= {1, 2, 3}
            kept += len(boxes)
    assert kept > 0


def test_instance_masks_stay_aligned_and_boxes_hug_them(project):
    samples, _ = load_samples(project / "data/prepared/shapes/train", "instance")
    compose = augment.pipeline(SPATIAL, "instance", seed=1)
    for sample in samples:
        out = augment.apply(compose, "instance", **_painted(sample, sample["masks"].max(0)))
        masks = out["masks"]
        assert masks.shape[1:] == out["image"].shape[:2] and len(masks) == len(out["labels"])
        union = masks.max(0) if len(masks) else np.zeros(out["image"].shape[:2], np.uint8)
        assert np.array_equal(out["image"][..., 0] > 0, union > 0)
        for mask, box in zip(masks, out["boxes"]):
            ys, xs = np.nonzero(mask)
            assert (box[0], box[1], box[2], box[3]) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_semantic_masks_stay_aligned(project):
    samples, _ = load_samples(project / "data/prepared/shapes/train", "segment")
    compose = augment.pipeline(SPATIAL, "segment", seed=2)
    for sample in samples:
        out = augment.apply(compose, "segment", **_painted(sample, sample["mask"]))
        assert out["mask"].shape == out["image"].shape[:2]
        assert np.array_equal(out["image"][..., 0] > 0, out["mask"] > 0)


def test_same_seed_same_augmentation(project):
    samples, _ = load_samples(project / "data/prepared/shapes/train", "detect", limit=4)
    runs = [[augment.apply(augment.pipeline(SPATIAL, "detect", seed=7), "detect", **s)["boxes"]
             for s in samples] for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(*runs))


@pytest.mark.parametrize("task", ["detect", "segment", "classify"])
def test_preview_cli_writes_a_grid(project, task, tmp_path):
    out = tmp_path / f"{task}.png"
    assert main(["augment", "preview", "--root", str(project), "--task", task, "-n", "4",
                 "--out", str(out)]) == 0
    with Image.open(out) as grid:
        assert grid.size == (2 * 192 + 3 * 4, 2 * 192 + 3 * 4)  # 2x2 tiles, 4 px padding
        assert len(np.unique(np.asarray(grid.convert("RGB")).reshape(-1, 3), axis=0)) > 10


def test_preview_of_instance_family_draws_masks(project, tmp_path):
    cfg = SegmentConfig(family="maskrcnn", augment=SPATIAL)
    out = augment.preview_grid(cfg, project / "data/prepared/shapes/train", tmp_path / "g.png", n=3)
    assert Image.open(out).size == (2 * 192 + 3 * 4,) * 2


def test_classification_samples_keep_their_image_labels(project):
    cfg = ClassifyConfig(multi_label=True, augment=SPATIAL)
    compose = augment.pipeline(cfg.augment, cfg.task, cfg.seed)
    samples, _ = load_samples(project / "data/prepared/shapes/train", "multilabel", limit=4)
    for sample in samples:
        out = augment.apply(compose, "multilabel", **sample)
        assert out["image"].shape == sample["image"].shape
        assert np.array_equal(out["labels"], sample["labels"]) and len(out["labels"]) >= 1


def test_preview_cli_bad_transform_fails_clearly(project, tmp_path, capsys):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"detect": {"augment": [{"name": "RandomBrightness"}]}}))
    assert main(["augment", "preview", "--root", str(tmp_path)]) == 1
    assert "unknown albumentations transform 'RandomBrightness'" in capsys.readouterr().err
