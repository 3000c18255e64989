"""Running a deployment artifact (visiongate.export) on the CPU, after checking it.

An ONNX file whose tensors live in external files is refused (they could name any path on
the machine); an OpenVINO artifact must be a folder with its `.xml` inside; a symlink
anywhere in an artifact is refused before this (CheckpointMeta.artifact_path). ONNX
Runtime and OpenVINO parse the model only; neither runs code from the file.

OpenVINO runs at the precision its runtime names, never at one it picks itself: `openvino`
in f32, `openvino-bf16` in bf16 where the CPU has it (OpenVINO's CPU capabilities list BF16:
AVX-512 BF16 or AMX), else in f32 too. Left alone, its CPU plugin picks bf16 on such CPUs, and
an artifact would answer differently there than on the machine its parity check ran on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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

    with openvino_precision(runtime):
        compiled = openvino.Core().compile_model(str(path), "CPU")
    return lambda x: compiled(x)[0]


def checked_artifact(path: Path, runtime: str) -> Path:
    """The artifact at `path`, refused (ModelError) when it is not one this runtime loads
    from inside its folder only."""
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
    elif runtime.startswith("openvino") and not (path.is_dir() and any(path.glob("*.xml"))):
        raise ModelError(f"{path}: not an OpenVINO model folder (no .xml inside)")
    if runtime.startswith("openvino"):
        _pin_openvino()  # from here on, no compile in this process picks its own precision
    return path


_PRECISION: ContextVar[str] = ContextVar("openvino_precision", default="f32")


def precision(runtime: str) -> str:
    """The precision OpenVINO computes in for `runtime` on this machine."""
    return "bf16" if runtime == "openvino-bf16" and cpu_has_bf16() else "f32"


@functools.cache
def cpu_has_bf16() -> bool:
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@contextmanager
def openvino_precision(runtime: str) -> Iterator[None]:
    """OpenVINO compiles made inside (in this thread) use `runtime`'s precision; outside,
    f32. Ultralytics compiles YOLO artifacts with a Core of its own at their first predict,
    so callers predict inside this, and the pin sits on Core.compile_model: each Core sets
    the CPU's INFERENCE_PRECISION_HINT before it compiles (AUTO uses the CPU with it)."""
    if not runtime.startswith("openvino"):
        yield
        return
    _pin_openvino()
    token = _PRECISION.set(precision(runtime))
    try:
        yield
    finally:
        _PRECISION.reset(token)


def _pin_openvino() -> None:
    import openvino

    if getattr(openvino.Core.compile_model, "pinned", False):
        return
    compile_model = openvino.Core.compile_model

    def pinned(self, *args, **kwargs):
        hint = openvino.Type.bf16 if _PRECISION.get() == "bf16" else openvino.Type.f32
        self.set_property("CPU", {"INFERENCE_PRECISION_HINT": hint})
        return compile_model(self, *args, **kwargs)

    pinned.pinned = True
    openvino.Core.compile_model = pinned
