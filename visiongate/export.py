"""Deployment artifacts for CPU serving, each checked against PyTorch before it may serve.

At registration (flows.retrain → tasks.export) the candidate is exported at its training
image size into its checkpoint folder — an ultralytics family (YOLO, RT-DETR, YOLO-seg,
YOLO-cls) by ultralytics' own exporter, the U-Net by torch.onnx:

- `onnx`: one `.onnx` file (ultralytics simplifies its graph with onnxslim), run by ONNX
  Runtime; the file itself needs no torch;
- `openvino`: run by OpenVINO on the CPU in f32 — ultralytics' IR folder (`.xml`, `.bin`,
  `metadata.yaml`), or for the U-Net the same `.onnx` file compiled by OpenVINO;
- `openvino-bf16`: the same file or folder, computed in bf16 (visiongate.runtimes) — the
  network 1.5-1.8x faster than f32 where the CPU has bf16 (AVX-512 BF16, AMX), checked on
  its own since bf16 rounds differently; refused, saying why, on a CPU without it.

The parity check: each artifact is scored on the same pinned test split as the PyTorch
checkpoint; a headline metric (visiongate.vocab.HEADLINE_METRICS) that differs by more than
`serve.parity_tolerance` refuses the artifact — it is left out of the logged model and
PyTorch still serves. The single-image latency of each runtime (median over up to
LATENCY_IMAGES test images, after WARMUP calls) decides `serve.runtime: auto`: the fastest
that passed. The torchvision families have no exported artifact yet: they serve with
PyTorch, and the report says so.

Loading an artifact (visiongate.models.load with a runtime) goes through
visiongate.runtimes.checked_artifact.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from visiongate import models, runtimes
from visiongate.errors import ModelError
from visiongate.models.meta import CheckpointMeta
from visiongate.vocab import HEADLINE_METRICS

EXPORTING_FAMILIES = ("yolo", "rtdetr", "unet")  # ultralytics: detect, instance, classify
LATENCY_IMAGES, WARMUP = 20, 2
ONNX_FILE = "best.onnx"  # the U-Net's export (ultralytics names its own after the weights)
OPSET = 17


@dataclass(frozen=True)
class ArtifactCheck:
    """One runtime's artifact on the test split: its metrics, its differences from PyTorch
    (artifact - torch) and its single-image latency; `problem` says why it was refused."""

    runtime: str
    artifact: str | None = None
    ms_per_image: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    deltas: dict[str, float] = field(default_factory=dict)
    problem: str | None = None

    @property
    def passed(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class Deployment:
    """What serves the candidate, and why: the PyTorch latency, every artifact's check,
    and the runtime chosen (`note`: why there is no artifact, when there is none)."""

    runtime: str
    torch_ms: float | None
    checks: tuple[ArtifactCheck, ...] = ()
    tolerance: float = 0.0
    note: str | None = None


def exportable(meta: CheckpointMeta) -> bool:
    return meta.family in EXPORTING_FAMILIES


def export(checkpoint: Path, runtime: str) -> str:
    """Export the checkpoint for `runtime` ("onnx" | "openvino" | "openvino-bf16") into its
    folder; the artifact's bare name there."""
    meta = CheckpointMeta.read(checkpoint)
    if not exportable(meta):
        raise ModelError(f"family {meta.family!r} does not export; it serves with PyTorch")
    if meta.family == "unet":
        return _export_unet(Path(checkpoint))
    from visiongate.models.yolo import _ultralytics

    _ultralytics()  # safe loading on, integrations off
    network = models._family_module(meta.family, meta.task).network(Path(checkpoint))
    options = {"simplify": True} if runtime == "onnx" else {}
    out = network.export(format=runtime.removesuffix("-bf16"), imgsz=meta.imgsz, device="cpu",
                         dynamic=False, verbose=False, **options)
    if not out:
        raise ModelError(f"ultralytics' {runtime} export wrote nothing")
    return Path(out).name


def _export_unet(checkpoint: Path) -> str:
    """torch.onnx export of the U-Net: input `images` (N,3,imgsz,imgsz) float in [0,1] as
    visiongate.models.unet.to_input makes it, output `logits` (N,K+1,imgsz,imgsz)."""
    import torch

    from visiongate.models.unet import network

    if (checkpoint / ONNX_FILE).is_file():  # openvino compiles the onnx export
        return ONNX_FILE
    model, config = network(checkpoint)
    example = torch.zeros(1, 3, config["imgsz"], config["imgsz"])
    torch.onnx.export(model, (example,), str(checkpoint / ONNX_FILE), input_names=["images"],
                      output_names=["logits"], opset_version=OPSET, dynamo=False,
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    return ONNX_FILE


def latency_ms(predict: Callable[[list[Path]], list], images: list[Path]) -> float | None:
    """Median milliseconds of one single-image call over up to LATENCY_IMAGES images."""
    sample = images[:LATENCY_IMAGES]
    if not sample:
        return None
    for image in sample[:WARMUP]:
        predict([image])
    times = []
    for image in sample:
        start = time.perf_counter()
        predict([image])
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def differences(metrics: dict[str, float], reference: dict[str, float]) -> dict[str, float]:
    """artifact - torch for each headline metric both have (both NaN: 0, one NaN: inf)."""
    out = {}
    for name in HEADLINE_METRICS:
        if name in metrics and name in reference:
            a, b = float(metrics[name]), float(reference[name])
            out[name] = 0.0 if math.isnan(a) and math.isnan(b) else (
                math.inf if math.isnan(a) or math.isnan(b) else a - b)
    return out


def check(checkpoint: Path, runtime: str, artifact: str, split_dir: Path,
          reference: dict[str, float], tolerance: float) -> ArtifactCheck:
    """Score the artifact on the split like the PyTorch checkpoint was; refused when a
    headline metric differs by more than `tolerance`."""
    from visiongate.datasets.coco import load_split
    from visiongate.evaluate import evaluate

    meta = CheckpointMeta.read(checkpoint)
    trial = dataclasses.replace(meta, artifacts={**(meta.artifacts or {}), runtime: artifact})
    trial.write(checkpoint)  # the artifact is loadable while it is checked
    try:
        metrics = evaluate(Path(checkpoint), Path(split_dir), runtime=runtime)
        split = load_split(Path(split_dir))
        ms = latency_ms(models.load(checkpoint, runtime),
                        [split.image_path(im) for im in split.images])
    finally:
        meta.write(checkpoint)
    deltas = differences(metrics, reference)
    worst = max(deltas, key=lambda k: abs(deltas[k]), default=None)
    problem = None
    if worst is None:
        problem = "no headline metric to compare"
    elif abs(deltas[worst]) > tolerance:
        problem = (f"{worst} differs from PyTorch by {deltas[worst]:+.4f} "
                   f"(bound ±{tolerance:g})")
    return ArtifactCheck(runtime, artifact, ms, metrics, deltas, problem)


def choose(wanted: str, torch_ms: float | None, checks: list[ArtifactCheck]) -> str:
    """The serving runtime: `wanted` if it passed (else torch), or with "auto" the fastest
    of torch and the artifacts that passed."""
    passed = {c.runtime: c.ms_per_image for c in checks if c.passed}
    if wanted != "auto":
        return wanted if wanted == "torch" or wanted in passed else "torch"
    timed = {"torch": torch_ms, **passed}
    if any(ms is None for ms in timed.values()):
        return "torch"
    return min(timed, key=lambda runtime: timed[runtime])


def prepare(checkpoint: Path, split_dir: Path, reference: dict[str, float],
            formats: tuple[str, ...], tolerance: float, wanted: str = "auto") -> Deployment:
    """Export, check and choose; meta.json then lists the artifacts that passed and the
    runtime chosen. A failed export is a refused artifact, never a failed retrain."""
    from visiongate.datasets.coco import load_split

    checkpoint = Path(checkpoint)
    meta = dataclasses.replace(CheckpointMeta.read(checkpoint), artifacts=None, runtime="torch")
    meta.write(checkpoint)  # a resumed training folder may hold an earlier run's choice
    if not exportable(meta):
        return Deployment("torch", None, (), tolerance,
                          f"family {meta.family!r} has no exported artifact: PyTorch serves")
    if not formats:
        return Deployment("torch", None, (), tolerance, "serve.export is empty: PyTorch serves")
    split = load_split(Path(split_dir))
    torch_ms = latency_ms(models.load(checkpoint), [split.image_path(im) for im in split.images])
    checks: list[ArtifactCheck] = []
    for runtime in formats:
        same = [c.artifact for c in checks if c.runtime == runtime.removesuffix("-bf16")]
        checks.append(_checked(checkpoint, runtime, split_dir, reference, tolerance,
                               same[0] if same else None))
    runtime = choose(wanted, torch_ms, checks)
    passed = {c.runtime: c.artifact for c in checks if c.passed}
    dataclasses.replace(meta, artifacts=passed or None, runtime=runtime).write(checkpoint)
    note = None if wanted in ("auto", runtime) else \
        f"serve.runtime {wanted!r} did not pass its check: {runtime} serves"
    return Deployment(runtime, torch_ms, tuple(checks), tolerance, note)


def _checked(checkpoint: Path, runtime: str, split_dir: Path, reference: dict[str, float],
             tolerance: float, exported: str | None = None) -> ArtifactCheck:
    """Export (unless `exported`: the f32 artifact's name, which bf16 computes with) and
    check one runtime's artifact."""
    if runtime == "openvino-bf16" and not runtimes.cpu_has_bf16():
        return ArtifactCheck(runtime, problem="this CPU has no bf16 (OpenVINO lists no BF16 "
                                              "among its capabilities)")
    try:
        artifact = exported or export(checkpoint, runtime)
    except Exception as err:  # the exporter's own failures: the artifact is refused
        return ArtifactCheck(runtime, problem=f"export failed: {type(err).__name__}: "
                                              f"{str(err).splitlines()[0][:200] if str(err) else ''}")
    try:
        return check(checkpoint, runtime, artifact, split_dir, reference, tolerance)
    except Exception as err:  # the runtime could not load or run it
        return ArtifactCheck(runtime, artifact, problem=f"could not be scored: "
                             f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}")
