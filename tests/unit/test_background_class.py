"""A dataset may have a real class named "background": it is trained, described and scored
like any other class, apart from the unlabelled pixels of semantic label maps (value 0)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visiongate import models
from visiongate.config import DetectConfig, SegmentConfig, SynthConfig
from visiongate.datasets.synth import generate
from visiongate.evaluate import evaluate

CLASSES = ("background", "square")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """Synthetic circles and squares, the circles' category renamed "background"."""
    root = tmp_path_factory.mktemp("bg-class")
    generate(SynthConfig(seed=5, image_size=64, classes=("circle", "square"),
                         splits={"train": 8, "val": 4, "test": 4}), root)
    for split in ("train", "val", "test"):
        path = root / split / "annotations.json"
        coco = json.loads(path.read_text())
        for category in coco["categories"]:
            category["name"] = CLASSES[category["id"] - 1]
        path.write_text(json.dumps(coco))
    return root


def test_unet_keeps_a_real_background_class(data_root, tmp_path):
    cfg = SegmentConfig(family="unet", epochs=1, imgsz=32, batch=4, base_channels=4, lr=0.01,
                        device="cpu")
    checkpoint = models.train(cfg, data_root, tmp_path / "unet")
    assert models.CheckpointMeta.read(checkpoint).class_names == CLASSES
    scores = evaluate(checkpoint, data_root / "test")
    # label 0 (unlabelled pixels) gets a name of its own; both real classes keep theirs
    assert {"iou/_background_", "iou/background", "iou/square"} <= set(scores)
    assert not any(k.startswith("iou/") for k in set(scores) - {
        "iou/_background_", "iou/background", "iou/square"})
    assert models.predict(checkpoint, [data_root / "test" / "images" / "000000.png"])[0].max() <= 2


def test_yolo_keeps_a_real_background_class(data_root, tmp_path):
    cfg = DetectConfig(family="yolo", epochs=1, imgsz=64, batch=4, lr=0.002, device="cpu")
    checkpoint = models.train(cfg, data_root, tmp_path / "yolo")
    assert models.CheckpointMeta.read(checkpoint).class_names == CLASSES
    scores = evaluate(checkpoint, data_root / "test")
    assert {"ap/background", "ap/square"} <= set(scores)
