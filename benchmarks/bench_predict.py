"""Time the registered champion's pyfunc predict against raw ultralytics on the same weights.

Not a test. Both sides run in one process on the same images, one image per call (as a
REST request would), alternating image by image after a warm-up: the pyfunc side is
`mlflow.pyfunc.load_model("models:/NAME@champion").predict(DataFrame(image=<base64>))`
(decode, checks, the family's predict, JSON-friendly records); the raw side is
`YOLO(best.pt).predict(path)` with the checkpoint's imgsz / conf / NMS IoU. Base64
encoding (the client's work) is done before timing.

Without --root, for each --sizes value a YOLOv8n (the demo's architecture; 1 epoch, so
speed, not accuracy, is representative) is trained in a child process on generated
images of that size, exported and parity-checked as a retrain does it (visiongate.export,
params.yaml `serve:` defaults: the fastest runtime that passed serves), registered and
promoted in a temporary store; with --root, the champion of that project's store is
timed on its test split. The served runtime's test mAP50 is compared with PyTorch's.

    python benchmarks/bench_predict.py [--sizes 128 640] [--images 64] [--root . --name NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.report import cpuinfo_field, machine, update_section  # noqa: E402
from visiongate import export, models, moves, registry, serving, tracking  # noqa: E402
from visiongate.config import (DetectConfig, MlflowConfig, ServeConfig, SynthConfig,  # noqa: E402
                               load_params)
from visiongate.evaluate import evaluate  # noqa: E402
from visiongate.datasets import synth  # noqa: E402
from visiongate.datasets.coco import load_split  # noqa: E402
from visiongate.devices import select_device  # noqa: E402


def temporary_champion(work: Path, size: int, n_images: int) -> tuple[str, str, list[Path]]:
    """(tracking URI, name, test images) of a freshly trained and promoted YOLOv8n."""
    synth.generate(SynthConfig(seed=0, image_size=size,
                               splits={"train": 8, "val": 4, "test": n_images}), work / "data")
    checkpoint = models.train(DetectConfig(epochs=1, imgsz=size, batch=4), work / "data",
                              work / "train")
    serve, test = ServeConfig(), work / "data" / "test"
    torch_metrics = evaluate(checkpoint, test)
    deployment = export.prepare(checkpoint, test, torch_metrics, tuple(serve.export),
                                serve.parity_tolerance, serve.runtime)
    (work / "deployment.json").write_text(json.dumps({
        "runtime": deployment.runtime, "torch_ms": deployment.torch_ms,
        "map50": {"torch": torch_metrics["map50"],
                  **{c.runtime: c.metrics.get("map50") for c in deployment.checks}},
        "ms": {c.runtime: c.ms_per_image for c in deployment.checks},
        "problems": {c.runtime: c.problem for c in deployment.checks if c.problem}}))
    uri = tracking.tracking_uri(work, MlflowConfig())
    run_id = tracking.start_run(uri, tracking.ensure_experiment(uri, work, MlflowConfig()),
                                "bench", {}, {})
    split = load_split(work / "data" / "test")
    images = [split.image_path(im) for im in split.images]
    version = registry.register(uri, "bench-detect",
                                tracking.log_model(uri, run_id, checkpoint, images[0]), {})
    moves.promote(uri, "bench-detect", version.version, "benchmark")
    return uri, "bench-detect", images


def prepared_champion(work: Path, size: int, n_images: int) -> tuple[str, str, list[Path]]:
    """temporary_champion, run in a child process: after training, torch inference in the
    training process ran several times slower here (on both sides alike)."""
    work.mkdir(parents=True)
    subprocess.run([sys.executable, __file__, "--prepare", str(work), "--sizes", str(size),
                    "--images", str(n_images)], check=True)
    prepared = json.loads((work / "champion.json").read_text())
    return prepared["uri"], prepared["name"], [Path(p) for p in prepared["images"]]


def deployment(work: Path) -> dict:
    """What temporary_champion's export and parity check found (empty with --root)."""
    path = work / "deployment.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def interleaved_ms(sides: dict, inputs: dict, warmup: int = 5) -> dict[str, list[float]]:
    """ms per call of each side, the sides alternating image by image, so that load from
    other processes on the machine falls on both alike; the first `warmup` are not kept."""
    n = len(next(iter(inputs.values())))
    times: dict[str, list[float]] = {side: [] for side in sides}
    for step, i in enumerate([*range(min(warmup, n)), *range(n)]):
        for side, fn in sides.items():
            start = time.perf_counter()
            fn(inputs[side][i])
            if step >= min(warmup, n):
                times[side].append((time.perf_counter() - start) * 1000)
    return times


def run(uri: str, name: str, images: list[Path], cache: Path) -> dict:
    import cv2
    import mlflow
    import pandas as pd
    from ultralytics import YOLO

    os.environ["MLFLOW_TRACKING_URI"] = uri
    version = registry.resolve(uri, f"models:/{name}@champion")
    pyfunc = mlflow.pyfunc.load_model(str(registry.checkout_model(uri, version, cache)))  # checked
    checkpoint = registry.checkout(uri, version, cache)
    meta = models.CheckpointMeta.read(checkpoint)
    if meta.family != "yolo":
        raise ValueError(f"{name}: the baseline is raw ultralytics; got family {meta.family}")
    raw = YOLO(str(meta.weights_path(checkpoint)), task="detect")
    device = select_device("auto")  # as visiongate's YOLO predict picks it
    # both answer the detections scoring >= serving's default min_score (ultralytics' own
    # default conf); below it, neither the pyfunc nor raw ultralytics computes anything
    args = dict(imgsz=meta.imgsz, conf=serving.DEFAULT_MIN_SCORE, iou=meta.config["nms_iou"],
                device=(device.index or 0) if device.type == "cuda" else device.type, verbose=False)
    frames = [pd.DataFrame({"image": [serving.encode_image(p)]}) for p in images]
    # where the pyfunc's time goes: the PNG decode alone, and the family's predict (decode,
    # ultralytics' pre-processing, the served runtime, NMS) without the pyfunc around it
    family = models.load(checkpoint, meta.runtime)
    times = interleaved_ms({"pyfunc": pyfunc.predict, "raw": lambda p: raw.predict(str(p), **args),
                            "model": lambda p: family([p], min_score=serving.DEFAULT_MIN_SCORE),
                            "decode": lambda p: cv2.imread(str(p))},
                           {"pyfunc": frames, "raw": images, "model": images, "decode": images})
    return {**{side: statistics.median(t) for side, t in times.items()},
            **{f"{side}_p90": statistics.quantiles(t, n=10)[-1] for side, t in times.items()},
            "imgsz": meta.imgsz, "n": len(images), "size": _size(images[0]),
            "runtime": meta.runtime}


def _size(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as im:
        return f"{im.width}×{im.height}"


def _map50(row: dict) -> str:
    found = row.get("deployment", {}).get("map50", {})
    if not found:
        return "—"
    return f"{found['torch']:.3f} / {found.get(row['runtime'], found['torch']):.3f}"


def _parity_ms(row: dict) -> str:
    found = row.get("deployment", {})
    if not found:
        return "—"
    ms = {"torch": found["torch_ms"], **found["ms"]}
    return " / ".join(f"{k} {v:.1f}" if v is not None else f"{k} refused"
                      for k, v in ms.items())


def cpu_features() -> str:
    """What this CPU offers low-precision inference, from /proc/cpuinfo and OpenVINO."""
    from visiongate.runtimes import cpu_has_bf16

    flags = (cpuinfo_field("flags") or "").split()
    found = [f for f in ("avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni", "amx_int8")
             if f in flags] or ["none of avx512_bf16, amx_bf16, avx512_vnni, avx_vnni"]
    bf16 = "computes bf16 here" if cpu_has_bf16() else "has no bf16 here (openvino-bf16 refused)"
    return f"this CPU's flags: {', '.join(found)}; OpenVINO {bf16}"


def breakdown(rows: list[dict]) -> str:
    """Where each row's pyfunc time goes (medians of separate calls: they need not add up)."""
    return "\n".join(
        f"- {r['imgsz']} px: PNG decode alone {r['decode']:.1f} ms (both sides pay it); the "
        f"family's predict with {r['runtime']} (decode, ultralytics' pre-processing, the "
        f"model, NMS) {r['model']:.1f} ms; the pyfunc around it (base64, the image checks, "
        f"MLflow's schema, the staged file, the answer's records) {r['pyfunc'] - r['model']:.1f} "
        f"ms; raw ultralytics PyTorch {r['raw']:.1f} ms." for r in rows if "model" in r)


def section(rows: list[dict], command: str) -> str:
    table = "\n".join(
        f"| {r['n']} × {r['size']} | {r['imgsz']} | {r['runtime']} | {r['pyfunc']:.1f} | "
        f"{r['raw']:.1f} | **{r['pyfunc'] / r['raw']:.2f}×** | {r['pyfunc_p90']:.1f} / "
        f"{r['raw_p90']:.1f} | {_map50(r)} | {_parity_ms(r)} |"
        for r in rows)
    return f"""## Predict latency

The champion served as an MLflow pyfunc (`mlflow.pyfunc.load_model("models:/NAME@champion")`;
request: a DataFrame with one base64 PNG; answer: JSON-friendly records) against raw
ultralytics PyTorch `YOLO(best.pt).predict(path)` on the same weights, imgsz and NMS IoU,
both answering the detections scoring ≥ 0.25 (serving's default `min_score`, ultralytics'
default `conf`; the pyfunc runs its model and NMS at that floor too). The pyfunc predicts
with the runtime its registration chose: the candidate exported to ONNX and OpenVINO (f32,
and bf16 where the CPU has it), each scored on the test split against PyTorch (parity bound
±0.005 on every headline metric), the fastest that passed serving (visiongate.export). One
process on the CPU with {rows[0]['threads']} torch thread(s) (ONNX Runtime and OpenVINO use
their own pools, all cores), one image per call, the sides alternating image by image after
5 warm-up calls each; median ms per image over one run. Goal: ratio ≤ 0.5× at equal mAP50
(±0.005) where the CPU has bf16/VNNI; {cpu_features()}. The models are 1-epoch YOLOv8n: speed
is representative, their mAP50 is near 0 (the equality is checked, it is not a test of
accuracy).

Machine: {machine()}.

Command: `{command}`

| images | imgsz | served runtime | pyfunc ms | raw ms | ratio | p90 pyfunc / raw ms | mAP50 torch / served | parity check ms / image |
|---|---|---|---|---|---|---|---|---|
{table}

Where the time goes (medians over the same images, each measured on its own):

{breakdown(rows)}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 640],
                        help="generated image sizes = imgsz, one trained model each")
    parser.add_argument("--images", type=int, default=64, help="test images per size")
    parser.add_argument("--root", help="time this project's champion instead of training")
    parser.add_argument("--name", default="shapes-detect", help="registered model (with --root)")
    parser.add_argument("--out", default=None, help="BENCHMARKS.md to update (default: the repo's)")
    parser.add_argument("--threads", type=int, default=1, help=(
        "torch threads for both sides (default 1: on a busy 2-core machine two threads make "
        "per-call latency jump to ~1 s whenever the other core is taken)"))
    parser.add_argument("--prepare", help=argparse.SUPPRESS)  # internal: train into this folder
    args = parser.parse_args(argv)
    if args.prepare:
        uri, name, images = temporary_champion(Path(args.prepare), args.sizes[0], args.images)
        (Path(args.prepare) / "champion.json").write_text(json.dumps(
            {"uri": uri, "name": name, "images": [str(p) for p in images]}))
        return 0
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="visiongate-bench-") as tmp:
        if args.root:
            root = Path(args.root).resolve()
            params = load_params(root / "params.yaml")
            split = load_split(root / "data" / "prepared" / params.dataset / "test")
            images = [split.image_path(im) for im in split.images][: args.images]
            rows.append(run(tracking.tracking_uri(root, params.mlflow), args.name, images,
                            Path(tmp) / "checkout"))
        for size in [] if args.root else args.sizes:
            uri, name, images = prepared_champion(Path(tmp) / f"s{size}", size, args.images)
            rows.append({**run(uri, name, images, Path(tmp) / f"s{size}" / "checkout"),
                         "deployment": deployment(Path(tmp) / f"s{size}")})
    for row in rows:
        row["threads"] = torch.get_num_threads()
    command = " ".join([".venv/bin/python benchmarks/bench_predict.py",
                        *(argv if argv is not None else sys.argv[1:])])
    text = section(rows, command)
    print(text)
    update_section(text, Path(args.out)) if args.out else update_section(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
