"""Deployment artifacts on real tiny models: ultralytics' ONNX / OpenVINO exports of a YOLO
and torch.onnx's of a U-Net pass the parity check and predict like PyTorch; an artifact
that changes the output is refused; the runtime chosen is what the pyfunc and
`visiongate predict` use, with no need of the PyTorch weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import numpy_helper

from visiongate import batch_predict, export, models, runtimes, serving
from visiongate.config import DetectConfig, SegmentConfig, SynthConfig
from visiongate.datasets import synth
from visiongate.datasets.coco import load_split
from visiongate.errors import ModelError
from visiongate.evaluate import evaluate

pytestmark = pytest.mark.integration
TOLERANCE = 0.005


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export-data")
    synth.generate(SynthConfig(seed=3, image_size=64, splits={"train": 8, "val": 4, "test": 8}),
                   root)
    return root


@pytest.fixture(scope="module")
def unet(data, tmp_path_factory) -> Path:
    cfg = SegmentConfig(epochs=2, imgsz=64, batch=4, base_channels=8)
    return models.train(cfg, data, tmp_path_factory.mktemp("export-unet"))


def _copy(checkpoint: Path, to: Path) -> Path:
    shutil.copytree(checkpoint, to, ignore=shutil.ignore_patterns("last.pt", "*.onnx"))
    return to


def _images(data: Path) -> list[Path]:
    split = load_split(data / "test")
    return [split.image_path(im) for im in split.images]


def test_faithful_unet_artifacts_pass_and_serve_without_the_weights(data, unet, tmp_path):
    checkpoint = _copy(unet, tmp_path / "unet")
    reference = evaluate(checkpoint, data / "test")

    deployment = export.prepare(checkpoint, data / "test", reference, ("onnx", "openvino"),
                                TOLERANCE, "onnx")

    assert [(c.runtime, c.passed) for c in deployment.checks] == [("onnx", True),
                                                                  ("openvino", True)]
    assert all(abs(d) <= TOLERANCE for c in deployment.checks for d in c.deltas.values())
    assert deployment.runtime == models.CheckpointMeta.read(checkpoint).runtime == "onnx"
    expected = models.predict(checkpoint, _images(data))
    # the folder as the registry holds it, with its PyTorch weights made unreadable
    logged = models.export_checkpoint(checkpoint, tmp_path / "logged")
    (logged / "best.pt").write_bytes(b"not weights")
    with pytest.raises(ModelError):
        models.load(logged)
    served = models.served(logged)(_images(data))
    agreement = np.mean([np.mean(a == b) for a, b in zip(served, expected)])
    assert agreement > 0.999
    frame = pd.DataFrame({"image": [serving.encode_image(p) for p in _images(data)[:2]]})
    records = serving._load_pyfunc(str(logged)).predict(frame)
    assert all("error" not in r and "segments" in r for r in records)
    summary = batch_predict.predict_folder(logged, data / "test" / "images", tmp_path / "out",
                                           None, "unet")
    assert summary["predicted"] == len(expected) and not summary["skipped"]


def _perturb_head(onnx_file: Path, label: int) -> None:
    """Make the U-Net's last layer answer class `label` everywhere (a broken export)."""
    model = onnx.load(str(onnx_file))
    bias = next(t for t in model.graph.initializer if t.name == "head.bias")
    values = np.zeros_like(numpy_helper.to_array(bias))
    values[label] = 1e4
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(onnx_file))


def test_an_artifact_that_changes_the_output_is_refused(data, unet, tmp_path):
    checkpoint = _copy(unet, tmp_path / "unet")
    reference = evaluate(checkpoint, data / "test")
    artifact = export.export(checkpoint, "onnx")
    _perturb_head(checkpoint / artifact, label=1)

    check = export.check(checkpoint, "onnx", artifact, data / "test", reference, TOLERANCE)

    assert not check.passed
    assert "differs from PyTorch" in check.problem and "bound ±0.005" in check.problem
    assert models.CheckpointMeta.read(checkpoint).artifacts is None  # not kept on the side
    assert export.choose("auto", 1e9, [check]) == "torch"


def test_yolo_exports_pass_parity_and_predict_like_pytorch(data, tmp_path):
    checkpoint = models.train(DetectConfig(epochs=1, imgsz=64, batch=4), data, tmp_path / "yolo")
    reference = evaluate(checkpoint, data / "test")

    deployment = export.prepare(checkpoint, data / "test", reference,
                                ("onnx", "openvino", "openvino-bf16"), TOLERANCE, "auto")

    bf16 = runtimes.cpu_has_bf16()
    assert [(c.runtime, c.passed) for c in deployment.checks] == [
        ("onnx", True), ("openvino", True), ("openvino-bf16", bf16)], \
        [c.problem for c in deployment.checks]
    meta = models.CheckpointMeta.read(checkpoint)
    assert meta.artifacts == {"onnx": "best.onnx", "openvino": "best_openvino_model",
                              **({"openvino-bf16": "best_openvino_model"} if bf16 else {})}
    assert meta.runtime == deployment.runtime
    torch_out = models.predict(checkpoint, _images(data))
    assert any(len(p["scores"]) for p in torch_out), "nothing predicted: nothing compared"
    scores = {}
    for runtime in ("onnx", "openvino", "openvino-bf16") if bf16 else ("onnx", "openvino"):
        scores[runtime] = []
        for ours, theirs in zip(models.load(checkpoint, runtime)(_images(data)), torch_out):
            # bf16 rounds scores near the floor to either side of it: its top scores only
            top = min(10, len(theirs["scores"])) if runtime != "openvino-bf16" else \
                min(3, len(theirs["scores"]), len(ours["scores"]))
            scores[runtime].append(float(ours["scores"].max()) if len(ours["scores"]) else None)
            np.testing.assert_allclose(np.sort(ours["scores"])[::-1][:top],
                                       np.sort(theirs["scores"])[::-1][:top],
                                       atol=2e-2 if runtime == "openvino-bf16" else 2e-3)
    if bf16:  # the same IR, computed in bf16 through ultralytics' own OpenVINO backend
        assert scores["openvino-bf16"] != scores["openvino"]  # each image's top score
    else:
        assert "no bf16" in deployment.checks[-1].problem
