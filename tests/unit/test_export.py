"""Deployment artifacts without training: the parity arithmetic, the runtime choice, what
meta.json accepts, and the artifacts a loader refuses."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from visiongate import export, models, runtimes
from visiongate.errors import ModelError
from visiongate.export import ArtifactCheck


def _meta(**extra) -> models.CheckpointMeta:
    return models.CheckpointMeta(family="unet", task="segment", class_names=("a", "b"),
                                 weights="best.pt", config={"imgsz": 8}, **extra)


def test_differences_compare_headline_metrics_only_and_nan_as_equal_or_infinite():
    reference = {"miou": 0.5, "dice": float("nan"), "pixel_acc": 0.9, "iou/a": 0.1}
    got = export.differences({"miou": 0.503, "dice": float("nan"), "pixel_acc": float("nan"),
                              "iou/a": 0.9}, reference)

    assert got["miou"] == pytest.approx(0.003)
    assert got["dice"] == 0.0
    assert got["pixel_acc"] == math.inf
    assert "iou/a" not in got  # per-class values are not headline metrics


@pytest.mark.parametrize("wanted, expected", [
    ("auto", "openvino"),   # the fastest that passed (onnx failed, though it was faster)
    ("torch", "torch"),
    ("openvino", "openvino"),
    ("onnx", "torch"),      # asked for, refused: PyTorch serves
])
def test_choose_serves_the_fastest_runtime_that_passed(wanted, expected):
    checks = [ArtifactCheck("onnx", "best.onnx", 5.0, problem="map50 differs"),
              ArtifactCheck("openvino", "best_openvino_model", 8.0)]

    assert export.choose(wanted, 20.0, checks) == expected


def test_choose_keeps_torch_when_it_is_the_fastest_or_untimed():
    assert export.choose("auto", 3.0, [ArtifactCheck("onnx", "best.onnx", 5.0)]) == "torch"
    assert export.choose("auto", None, [ArtifactCheck("onnx", "best.onnx", 5.0)]) == "torch"


def test_meta_round_trips_artifacts_and_keeps_old_files_unchanged(tmp_path):
    plain = _meta()
    assert "artifacts" not in plain.to_dict() and "runtime" not in plain.to_dict()

    served = _meta(artifacts={"onnx": "best.onnx"}, runtime="onnx")
    served.write(tmp_path)

    assert models.CheckpointMeta.read(tmp_path) == served


@pytest.mark.parametrize("extra, words", [
    ({"artifacts": {"onnx": "../x.onnx"}}, "artifacts must map"),
    ({"artifacts": {"tensorrt": "best.engine"}}, "artifacts must map"),
    ({"runtime": "onnx"}, "runtime must be 'torch' or one of the artifacts"),
])
def test_meta_refuses_artifacts_outside_the_folder_or_unknown_runtimes(extra, words):
    with pytest.raises(ModelError, match=words):
        _meta(**extra)


def test_a_symlinked_artifact_is_refused(tmp_path):
    meta = _meta(artifacts={"onnx": "best.onnx"}, runtime="onnx")
    (tmp_path / "best.onnx").symlink_to("/etc/hostname")

    with pytest.raises(ModelError, match="symlink"):
        meta.artifact_path(tmp_path, "onnx")
    with pytest.raises(ModelError, match="no openvino artifact"):
        meta.artifact_path(tmp_path, "openvino")


def _identity_model(path: Path, external: bool) -> Path:
    """A one-node ONNX model y = x + w; with `external`, w names a file outside the folder."""
    weight = numpy_helper.from_array(np.ones(4, np.float32), "w")
    if external:
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "../../../etc/passwd"), ("length", "16")):
            entry = weight.external_data.add()
            entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_an_onnx_file_with_external_tensors_is_refused_before_any_runtime_reads_it(tmp_path):
    hostile = _identity_model(tmp_path / "best.onnx", external=True)

    with pytest.raises(ModelError, match="external files"):
        runtimes.session(hostile, "onnx")


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_a_self_contained_onnx_file_runs_in_both_runtimes(tmp_path, runtime):
    run = runtimes.session(_identity_model(tmp_path / "best.onnx", external=False), runtime)

    assert np.asarray(run(np.arange(4, dtype=np.float32))).tolist() == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize(("runtime", "bf16"), [("openvino", False), ("openvino-bf16", True)])
def test_openvino_computes_in_the_precision_its_runtime_names_never_its_own(tmp_path, runtime,
                                                                            bf16):
    import openvino

    model = runtimes.checked_artifact(_identity_model(tmp_path / "best.onnx", False), runtime)
    with runtimes.openvino_precision(runtime):
        inside = openvino.Core().compile_model(str(model), "CPU")
    outside = openvino.Core().compile_model(str(model), "CPU")

    wanted = openvino.Type.bf16 if bf16 and runtimes.cpu_has_bf16() else openvino.Type.f32
    assert inside.get_property("INFERENCE_PRECISION_HINT") == wanted
    # left to itself OpenVINO would pick bf16 on a CPU that has it
    assert outside.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.f32
    assert runtimes.precision(runtime) == ("bf16" if wanted == openvino.Type.bf16 else "f32")


def test_a_file_that_is_not_onnx_is_a_clear_model_error(tmp_path):
    junk = tmp_path / "best.onnx"
    junk.write_bytes(b"\x08\x07not a protobuf" * 10)

    with pytest.raises(ModelError, match="not a readable ONNX model"):
        runtimes.checked_artifact(junk, "onnx")
    with pytest.raises(ModelError, match="not an OpenVINO model folder"):
        runtimes.checked_artifact(tmp_path, "openvino")
