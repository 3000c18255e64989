"""Classification families through the one model interface: 1-epoch CPU runs at 32 px on
synthetic shapes, probabilities per image, multi-label thresholds in meta.json, resume,
local (backbone-only) weights, and the checkpoint description's thresholds rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import models as tvm

from visiongate import models
from visiongate.config import SynthConfig
from visiongate.config_models import ClassifyConfig
from visiongate.datasets.coco import load_split
from visiongate.datasets.synth import generate
from visiongate.errors import ModelError
from visiongate.models.classify import build_model, load_classifier_weights
from visiongate.models.meta import META_FILE, CheckpointMeta
from visiongate.models.yolo_classify import class_positions, export_classify_layout
from visiongate.weights_rule import ENV

from explain_checks import check_explained

K = 3  # circle, square, triangle


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate(SynthConfig(seed=5, image_size=32, splits={"train": 8, "val": 4}), root)
    return root


def tiny(**overrides) -> ClassifyConfig:
    # batch 8 = the whole train split: one step per epoch keeps each run to seconds
    base = {"enabled": True, "epochs": 1, "imgsz": 32, "batch": 8, "device": "cpu", "lr": 0.002}
    return ClassifyConfig(**{**base, **overrides})


def _val_images(data_root: Path) -> list[Path]:
    split = load_split(data_root / "val")
    return [split.image_path(image) for image in split.images]


@pytest.mark.parametrize("family", ["yolo", "resnet18", "mobilenet_v3_small", "efficientnet_b0"])
def test_single_label_family_trains_one_epoch_and_predicts_probabilities(family, data_root,
                                                                         tmp_path):
    epochs: list[tuple[int, dict]] = []
    checkpoint = models.train(tiny(family=family), data_root, tmp_path / "ckpt",
                              lambda e, m: epochs.append((e, m)))
    assert [e for e, _ in epochs] == [1]
    assert any("accuracy" in k for k in epochs[0][1])
    meta = CheckpointMeta.read(checkpoint)
    assert (meta.family, meta.task, meta.thresholds) == (family, "classify", None)
    assert meta.class_names == ("circle", "square", "triangle")
    images = _val_images(data_root)
    preds = models.predict(checkpoint, images)
    assert len(preds) == len(images)
    for p in preds:
        assert isinstance(p, np.ndarray) and p.dtype == np.float32 and p.shape == (K,)
        assert np.all(p >= 0) and abs(float(p.sum()) - 1.0) < 1e-4
    again = models.load(checkpoint)(images[:2])
    np.testing.assert_allclose(np.stack(again), np.stack(preds[:2]), atol=1e-5)
    check_explained(checkpoint, images[0], tmp_path / "explained")


def test_multilabel_family_gives_sigmoids_and_stores_thresholds(data_root, tmp_path):
    epochs: list[tuple[int, dict]] = []
    cfg = tiny(family="resnet18", multi_label=True)
    checkpoint = models.train(cfg, data_root, tmp_path / "ckpt", lambda e, m: epochs.append((e, m)))
    assert "val_map" in epochs[0][1]
    stored = json.loads((checkpoint / META_FILE).read_text())
    assert stored["task"] == "multilabel" and len(stored["thresholds"]) == K
    assert all(0 <= t <= 1 for t in stored["thresholds"])
    assert CheckpointMeta.read(checkpoint).thresholds == tuple(stored["thresholds"])
    for p in models.predict(checkpoint, _val_images(data_root)):
        assert p.dtype == np.float32 and p.shape == (K,) and np.all((p >= 0) & (p <= 1))


def test_local_weights_then_resume(data_root, tmp_path, capsys, monkeypatch):
    """From a local file with a 7-class head; a second call finds the run finished (torch_loop
    trains nothing); more epochs continue it from last.pt."""
    monkeypatch.setenv(ENV, str(tmp_path))  # the weights folder (visiongate.weights_rule)
    torch.save(tvm.resnet18(weights=None, num_classes=7).state_dict(), tmp_path / "w.pt")
    out, cfg = tmp_path / "ckpt", tiny(weights=str(tmp_path / "w.pt"))
    models.train(cfg, data_root, out)
    assert "classify.weights: loaded" in capsys.readouterr().out
    best = (out / "best.pt").read_bytes()
    epochs: list[int] = []
    models.train(cfg, data_root, out, lambda e, m: epochs.append(e))
    assert epochs == [] and (out / "best.pt").read_bytes() == best
    models.train(tiny(weights=cfg.weights, epochs=2), data_root, out, lambda e, m: epochs.append(e))
    assert epochs == [2]  # resumed after epoch 1 from last.pt
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2


def test_whole_model_weights_with_another_head_load_except_the_head(tmp_path, capsys):
    source = tvm.resnet18(weights=None, num_classes=10)
    torch.save(source.state_dict(), tmp_path / "resnet18-10.pt")
    model = build_model("resnet18", K)
    head = model.fc.weight.detach().clone()
    load_classifier_weights(model, str(tmp_path / "resnet18-10.pt"), None)
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.fc.weight.shape == (K, 512) and torch.equal(model.fc.weight, head)
    log = capsys.readouterr().out
    assert "loaded" in log and "fc.weight" in log and "fc.bias" in log


def test_backbone_only_weights_load_into_the_features(tmp_path, capsys):
    source = tvm.mobilenet_v3_small(weights=None, num_classes=5)
    torch.save(source.features.state_dict(), tmp_path / "backbone.pt")
    model = build_model("mobilenet_v3_small", K)
    load_classifier_weights(model, str(tmp_path / "backbone.pt"), None)
    for key, value in source.features.state_dict().items():
        assert torch.equal(model.state_dict()[f"features.{key}"], value)
    assert "not in the file" in capsys.readouterr().out


def test_yolo_layout_orders_classes_by_category(data_root, tmp_path):
    out, names = export_classify_layout(data_root, tmp_path / "cache")
    assert names == ["circle", "square", "triangle"]
    for split in ("train", "val"):
        assert sorted(p.name for p in (out / split).iterdir()) == ["001", "002", "003"]
    assert sum(1 for _ in (out / "train").rglob("*.png")) == 8
    assert class_positions({0: "001", 1: "002", 2: "003"}, K, Path("w")).tolist() == [0, 1, 2]
    with pytest.raises(ModelError, match="class names"):
        class_positions({0: "cat", 1: "dog", 2: "bird"}, K, Path("w"))


def _meta(**changes) -> CheckpointMeta:
    fields = {"family": "resnet18", "task": "multilabel", "class_names": ("a", "b"),
              "weights": "best.pt", **changes}
    return CheckpointMeta(**fields)


@pytest.mark.parametrize("changes,match", [
    ({"thresholds": (0.5,)}, "2 numbers in"),
    ({"thresholds": (0.5, float("nan"))}, "2 numbers in"),
    ({"thresholds": (0.5, 1.5)}, "2 numbers in"),
    ({"thresholds": (0.5, 0.5), "task": "classify"}, "multilabel' only"),
])
def test_thresholds_are_checked(changes, match):
    with pytest.raises(ModelError, match=match):
        _meta(**changes)


def test_thresholds_round_trip_and_old_files_read_as_none(tmp_path):
    _meta(thresholds=[0.25, 1]).write(tmp_path / "new")
    assert CheckpointMeta.read(tmp_path / "new").thresholds == (0.25, 1.0)
    _meta().write(tmp_path / "old")
    assert "thresholds" not in json.loads((tmp_path / "old" / META_FILE).read_text())
    assert CheckpointMeta.read(tmp_path / "old").thresholds is None
