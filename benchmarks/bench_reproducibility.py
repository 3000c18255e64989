"""Is CPU training with a fixed seed reproducible? Each family trains twice with the same
config, data and seed; the weights are compared tensor by tensor and the test metric too.

    .venv/bin/python benchmarks/bench_reproducibility.py [--images 64] [--epochs 3] [--write]

Cases: params.yaml's detect (YOLOv8n) and segment (U-Net) sections — the demo's settings,
`--epochs` replacing theirs —, YOLOv8n with and without `cache: ram` and with workers 0,
U-Net and Faster R-CNN (torchvision) at their defaults. `--write` updates its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.report import machine, update_section  # noqa: E402
from visiongate import models  # noqa: E402
from visiongate.config import DetectConfig, SegmentConfig, SynthConfig, load_params  # noqa: E402
from visiongate.datasets.synth import generate  # noqa: E402
from visiongate.evaluate import evaluate  # noqa: E402

SECTION = "## Reproducibility of CPU training"


def _state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The trained weights as float tensors, whatever the family stores."""
    meta = models.CheckpointMeta.read(checkpoint)
    path = meta.weights_path(checkpoint)
    if meta.family in ("yolo", "rtdetr"):
        from ultralytics.nn.tasks import torch_safe_load

        ckpt, _ = torch_safe_load(str(path), safe_only=True)
        model = ckpt.get("ema") or ckpt["model"]
        return {k: v.float() for k, v in model.state_dict().items()}
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k: v.float() for k, v in state.items()}


def _compare(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[bool, float]:
    """(bit-identical, largest |difference| over all tensors)."""
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    diff = max((float((a[k] - b[k]).abs().max()) for k in a if a[k].numel()), default=0.0)
    return same, diff


def _demo(section: str, epochs: int):
    """params.yaml's section (the demo's settings: augmentation, lr, ...) for `epochs`."""
    cfg = getattr(load_params(Path(__file__).resolve().parents[1] / "params.yaml"), section)
    return cfg.model_copy(update={"epochs": epochs})


CASES = {
    "yolo (params.yaml detect)": lambda e: _demo("detect", e),
    "unet (params.yaml segment)": lambda e: _demo("segment", e),
    "yolo (demo: cache ram)": lambda e: DetectConfig(epochs=e, ultralytics_args={"cache": "ram"}),
    "yolo (no cache)": lambda e: DetectConfig(epochs=e, ultralytics_args={}),
    "yolo (workers 0)": lambda e: DetectConfig(epochs=e, ultralytics_args={"workers": 0}),
    "unet": lambda e: SegmentConfig(epochs=e),
    "fasterrcnn": lambda e: DetectConfig(family="fasterrcnn", epochs=e, batch=8),
}


def run_case(name: str, data: Path, work: Path, epochs: int) -> dict:
    metric_key = "miou" if name.startswith("unet") else "map50"
    runs = []
    for i in range(2):
        cfg = CASES[name](epochs)
        t0 = time.perf_counter()
        checkpoint = models.train(cfg, data, work / f"{name.split()[0]}-{len(name)}-{i}")
        seconds = time.perf_counter() - t0
        runs.append((checkpoint, evaluate(checkpoint, data / "test")[metric_key], seconds))
    same, diff = _compare(_state(runs[0][0]), _state(runs[1][0]))
    return {"case": name, "same": same, "max_abs": diff, "metric": metric_key,
            "a": runs[0][1], "b": runs[1][1], "seconds": sum(r[2] for r in runs) / 2}


def render(rows: list[dict], images: int, epochs: int) -> str:
    lines = [SECTION, "",
             f"`benchmarks/bench_reproducibility.py --images {images} --epochs {epochs}` on "
             f"{machine()}. Each case trains twice with the same config, data and seed.", "",
             "| case | bit-identical weights | max abs weight diff | test metric run 1 | "
             "run 2 | s per run |", "|---|:-:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['case']} | {'yes' if r['same'] else 'no'} | {r['max_abs']:.2e} | "
                     f"{r['metric']} {r['a']:.4f} | {r['b']:.4f} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        n = args.images
        generate(SynthConfig(splits={"train": n, "val": max(8, n // 4), "test": max(8, n // 4)}),
                 data)
        rows = [run_case(name, data, Path(tmp) / "work", args.epochs) for name in args.cases]
    text = render(rows, args.images, args.epochs)
    print(text)
    if args.write:
        update_section(text)


if __name__ == "__main__":
    main()
