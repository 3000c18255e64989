"""Every model family trains one epoch and predicts through the one interface (64 px)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from visiongate import models
from visiongate.config import DetectConfig, Params, SegmentConfig, SynthConfig
from visiongate.datasets.synth import generate
from visiongate.weights_rule import ENV

from explain_checks import check_explained

K = 3  # synth classes: circle, square, triangle
FAMILIES = [("detect", f) for f in ("yolo", "rtdetr", "fasterrcnn", "retinanet", "ssdlite")] + \
    [("segment", f) for f in ("unet", "fcn", "deeplabv3", "yolo", "maskrcnn")]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate(SynthConfig(seed=3, image_size=64, splits={"train": 8, "val": 4, "test": 4}), root)
    return root


def tiny(section: str, **overrides):
    """A 1-epoch, 64 px, CPU config of the section (flips as augmentation, as the demo)."""
    base = {"epochs": 1, "imgsz": 64, "batch": 4, "device": "cpu", "lr": 0.002}
    if section == "segment":
        base["base_channels"] = 4
    cls = DetectConfig if section == "detect" else SegmentConfig
    return cls(**{**base, **overrides})


def _check_detections(preds: list[dict], size: int, instance: bool) -> None:
    for p in preds:
        n = len(p["scores"])
        assert p["boxes"].shape == (n, 4) and p["labels"].shape == (n,)
        assert np.all((p["scores"] >= 0) & (p["scores"] <= 1))
        assert np.all((p["labels"] >= 1) & (p["labels"] <= K))
        assert np.all(p["boxes"] >= -1e-3) and np.all(p["boxes"] <= size + 1e-3)
        assert np.all(p["boxes"][:, 2:] >= p["boxes"][:, :2])
        if instance:
            assert p["masks"].dtype == bool and p["masks"].shape == (n, size, size)


@pytest.mark.parametrize("section,family", FAMILIES, ids=[f"{s}-{f}" for s, f in FAMILIES])
def test_family_trains_one_epoch_and_predicts(section, family, data_root, tmp_path):
    # RT-DETR with a YOLOv8n backbone: the same family and code path, a fifth of rtdetr-l's cost
    cfg = tiny(section, family=family, **({"model": "yolov8n-rtdetr.yaml"} if family == "rtdetr" else {}))
    epochs: list[tuple[int, dict]] = []
    checkpoint = models.train(cfg, data_root, tmp_path / "ckpt", lambda e, m: epochs.append((e, m)))
    assert [e for e, _ in epochs] == [1]
    assert any(k.startswith("val") or k.startswith("metrics/") for k in epochs[0][1])
    meta = models.CheckpointMeta.read(checkpoint)
    assert meta.family == family and meta.task == cfg.task
    assert meta.config["family"] == family and meta.class_names == ("circle", "square", "triangle")
    images = sorted((data_root / "test" / "images").glob("*.png"))
    preds = models.predict(checkpoint, images)
    assert len(preds) == len(images)
    if cfg.task == "segment":
        assert all(p.shape == (64, 64) and p.dtype == np.uint8 and p.max() <= K for p in preds)
    else:
        _check_detections(preds, 64, cfg.task == "instance")
    check_explained(checkpoint, images[0], tmp_path / "explained")


def test_switching_family_is_a_params_change():
    params = Params.model_validate({"detect": {"family": "fasterrcnn"},
                                    "segment": {"family": "maskrcnn"}})
    assert params.detect.backbone == "mobilenet_v3_large_fpn"
    assert params.segment.task == "instance"
    assert params.segment.gate.floors == {"mask_map50": 0.5}  # instance default, not miou
    assert Params.model_validate({"detect": {"family": "rtdetr"}}).detect.model == "rtdetr-l.yaml"
    assert Params.model_validate({"segment": {"family": "yolo"}}).segment.model == "yolov8n-seg.yaml"
    assert Params().detect.model == "yolov8n.yaml" and Params().segment.task == "segment"


@pytest.mark.parametrize("section,fields,match", [
    ("segment", {"family": "maskrcnn", "gate": {"floors": {"miou": 0.5}}}, "miou.*maskrcnn"),
    ("segment", {"family": "deeplabv3", "gate": {"floors": {"mask_map50": 0.5}}}, "mask_map50"),
    ("detect", {"gate": {"class_floors": {"iou": 0.5}}}, "prefix 'iou'"),
    ("detect", {"family": "rtdetr", "model": "yolov8n.yaml"}, "rtdetr-l.yaml"),
    ("detect", {"family": "fasterrcnn", "backbone": "vgg16"}, "resnet50_fpn"),
    ("segment", {"family": "yolo", "model": "yolov8n.yaml"}, "yolov8n-seg.yaml"),
])
def test_config_refuses_what_the_family_cannot_do(section, fields, match):
    with pytest.raises(ValidationError, match=match):
        Params.model_validate({section: fields})


@pytest.mark.parametrize("section,family", [("segment", "deeplabv3")])
def test_same_seed_same_metrics_on_cpu(section, family, data_root, tmp_path):
    runs = []
    for name in ("a", "b"):
        seen: list[dict] = []
        models.train(tiny(section, family=family), data_root, tmp_path / name,
                     lambda e, m: seen.append(m))
        runs.append(seen[-1])
    assert runs[0].keys() == runs[1].keys()
    for key, value in runs[0].items():
        other = runs[1][key]
        assert (math.isnan(value) and math.isnan(other)) or value == pytest.approx(other, abs=1e-4), key


def test_local_weights_are_loaded_and_missing_ones_refused(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, str(tmp_path))  # the weights folder (visiongate.weights_rule)
    first = models.train(tiny("segment", family="unet"), data_root, tmp_path / "a")
    weights = tmp_path / "weights.pt"
    torch.save(torch.load(first / "best.pt", weights_only=True)["state_dict"], weights)
    models.train(tiny("segment", family="unet", weights=str(weights), lr=1e-9), data_root,
                 tmp_path / "b")
    a = torch.load(first / "best.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "best.pt", weights_only=True)["state_dict"]
    key = next(k for k, v in a.items() if v.is_floating_point() and "running" not in k)
    assert torch.allclose(a[key], b[key], atol=1e-4)  # lr ~0: still the loaded weights
    with pytest.raises(FileNotFoundError, match="segment.weights.*nothing is downloaded"):
        models.train(tiny("segment", family="fcn", weights=str(tmp_path / "nope.pt")),
                     data_root, tmp_path / "c")


def test_unknown_family_in_a_checkpoint_is_a_clear_error(tmp_path):
    models.CheckpointMeta(family="vgg", task="detect", class_names=(),
                          weights="w.pt").write(tmp_path)
    with pytest.raises(ValueError, match="unknown model family 'vgg'.*choose from"):
        models.predict(tmp_path, [])
