"""Running a deployment artifact (visiongate.export) on the CPU, after checking it.

An ONNX file whose tensors live in external files is refused (they could name any path on
the machine); an OpenVINO artifact must be a folder with its `.xml` inside; a symlink
anywhere in an artifact is refused before this (CheckpointMeta.artifact_path). ONNX
Runtime and OpenVINO parse the model only; neither runs code from the file.

OpenVINO runs in f32: its CPU plugin would otherwise pick bf16 on CPUs that have it (AVX-512
BF16, AMX), and an artifact would answer differently on such a machine than on the one its
parity check ran on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from visiongate.errors import ModelError


def session(path: Path, runtime: str) -> Callable:
    """`run(array) -> first output array` for an ONNX file (ONNX Runtime, or OpenVINO
    compiling it), checked by `checked_artifact` first."""
    path = checked_artifact(path, runtime)
    if runtime == "onnx":
        import onnxruntime

        ort = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = ort.get_inputs()[0].name
        return lambda x: ort.run(None, {name: x})[0]
    import openvino

    compiled = openvino.Core().compile_model(str(path), "CPU")
    return lambda x: compiled(x)[0]


def checked_artifact(path: Path, runtime: str) -> Path:
    """The artifact at `path`, refused (ModelError) when it is not one this runtime loads
    from inside its folder only. Every OpenVINO load passes here, so the f32 pin is set here."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx
        from onnx.external_data_helper import _get_all_tensors

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as err:  # a truncated or foreign file: onnx raises its own kinds
            raise ModelError(f"{path}: not a readable ONNX model ({str(err)[:200]})") from err
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in _get_all_tensors(model)):
            raise ModelError(f"{path}: its tensors are stored in external files; visiongate "
                             f"loads self-contained ONNX files only")
    elif runtime == "openvino" and not (path.is_dir() and any(path.glob("*.xml"))):
        raise ModelError(f"{path}: not an OpenVINO model folder (no .xml inside)")
    if runtime == "openvino":
        _openvino_in_f32()
    return path


def _openvino_in_f32() -> None:
    """Pin every OpenVINO CPU compile in this process to f32. Ultralytics compiles YOLO
    artifacts with a Core of its own, so the pin sits on Core.compile_model: each Core sets
    the CPU's INFERENCE_PRECISION_HINT before it compiles (AUTO uses the CPU with it)."""
    import openvino

    if getattr(openvino.Core.compile_model, "pins_f32", False):
        return
    compile_model = openvino.Core.compile_model

    def pinned(self, *args, **kwargs):
        self.set_property("CPU", {"INFERENCE_PRECISION_HINT": openvino.Type.f32})
        return compile_model(self, *args, **kwargs)

    pinned.pins_f32 = True
    openvino.Core.compile_model = pinned
