"""Per-family training and prediction speed, and visiongate's YOLO overhead vs raw ultralytics.

    .venv/bin/python benchmarks/bench_families.py [--images 64] [--epochs 2] [--write]

Every family trains `--epochs` epochs on `--images` synthetic images at the demo sizes
(detect 128 px, segment 64 px; CPU unless a GPU is present) and predicts the test split:
train images/s (images x epochs / wall time, validation included) and predict ms/image.
Then YOLOv8n trains once through visiongate and once through `ultralytics.YOLO(...).train`
with the same data export, epochs, seed and arguments: wall-time ratio and mAP50 difference
(both scored by visiongate's evaluator). `--write` updates its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.report import machine, update_section  # noqa: E402
from visiongate import models  # noqa: E402
from visiongate.config import DetectConfig, SegmentConfig, SynthConfig  # noqa: E402
from visiongate.datasets.synth import generate  # noqa: E402
from visiongate.evaluate import evaluate  # noqa: E402

FAMILIES = [("detect", f) for f in ("yolo", "rtdetr", "fasterrcnn", "retinanet", "ssdlite")] + \
    [("segment", f) for f in ("unet", "fcn", "deeplabv3", "yolo", "maskrcnn")]
SECTION = "## Model families"


def _cfg(section: str, family: str, epochs: int):
    cls = DetectConfig if section == "detect" else SegmentConfig
    return cls(family=family, epochs=epochs, device="auto")  # demo imgsz / batch / lr


def bench_family(section: str, family: str, data: Path, work: Path, epochs: int, n: int) -> dict:
    cfg = _cfg(section, family, epochs)
    t0 = time.perf_counter()
    checkpoint = models.train(cfg, data, work / f"{section}-{family}")
    train_s = time.perf_counter() - t0
    images = sorted((data / "test" / "images").glob("*.png"))
    t0 = time.perf_counter()
    models.predict(checkpoint, images)
    predict_s = time.perf_counter() - t0
    metrics = evaluate(checkpoint, data / "test")
    key = {"detect": "map50", "instance": "mask_map50", "segment": "miou"}[cfg.task]
    return {"section": section, "family": family, "model": cfg.model or cfg.backbone or "-",
            "imgsz": cfg.imgsz, "train_ips": n * epochs / train_s,
            "predict_ms": 1000 * predict_s / len(images), "metric": f"{key} {metrics[key]:.3f}"}


def bench_yolo_overhead(data: Path, work: Path, epochs: int) -> dict:
    from visiongate.models import yolo

    cfg = DetectConfig(epochs=epochs, device="auto", ultralytics_args={})
    t0 = time.perf_counter()
    ours = models.train(cfg, data, work / "vg-yolo")
    ours_s = time.perf_counter() - t0
    ultralytics = yolo._ultralytics()
    data_yaml = yolo.export_yolo(data, work / "raw-yolo-data")
    raw = ultralytics.YOLO(cfg.model, task="detect")
    t0 = time.perf_counter()
    with yolo._all_cores():  # same thread count as visiongate gives it
        raw.train(data=str(data_yaml), epochs=epochs, imgsz=cfg.imgsz, batch=cfg.batch,
                  nbs=cfg.batch, optimizer="AdamW", lr0=cfg.lr, seed=cfg.seed, deterministic=True,
                  device=yolo.ultralytics_device("auto"), project=str(work), name="raw",
                  exist_ok=True, plots=False, workers=0, verbose=False, pretrained=False)
    raw_s = time.perf_counter() - t0
    raw_dir = work / "raw-checkpoint"
    raw_dir.mkdir()
    (raw_dir / "best.pt").write_bytes(Path(raw.trainer.best).read_bytes())
    dataclasses.replace(models.CheckpointMeta.read(ours), weights="best.pt").write(raw_dir)
    ours_map, raw_map = (evaluate(c, data / "test")["map50"] for c in (ours, raw_dir))
    return {"ours_s": ours_s, "raw_s": raw_s, "ratio": ours_s / raw_s,
            "ours_map50": ours_map, "raw_map50": raw_map}


def table(rows: list[dict], overhead: dict, args: argparse.Namespace) -> str:
    lines = [SECTION, "", "Each family with its defaults (from scratch) on synthetic shapes at the demo "
             "image sizes. Train images/s includes per-epoch validation; predict covers loading "
             "the checkpoint and every test image.", "", f"Machine: {machine()}.", "",
             f"Command: `.venv/bin/python benchmarks/bench_families.py --images {args.images} "
             f"--epochs {args.epochs} --write`", "",
             "| task | family | model / backbone | px | train img/s | predict ms/img | test score |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['section']} | {r['family']} | {r['model']} | {r['imgsz']} | {r['train_ips']:.1f} "
              f"| {r['predict_ms']:.1f} | {r['metric']} |" for r in rows]
    lines += ["", f"YOLOv8n through visiongate vs raw `ultralytics.YOLO(...).train(...)` (same data "
              f"export, epochs, seed, arguments): {overhead['ours_s']:.1f} s vs {overhead['raw_s']:.1f} s"
              f" (ratio {overhead['ratio']:.2f}); mAP50 {overhead['ours_map50']:.3f} vs "
              f"{overhead['raw_map50']:.3f} (difference {overhead['ours_map50'] - overhead['raw_map50']:+.3f}).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="training images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="update its section of BENCHMARKS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        splits = {"train": args.images, "val": max(4, args.images // 4), "test": max(4, args.images // 4)}
        generate(SynthConfig(image_size=128, splits=splits), work / "data")
        rows = [bench_family(s, f, work / "data", work, args.epochs, args.images) for s, f in FAMILIES]
        text = table(rows, bench_yolo_overhead(work / "data", work, args.epochs), args)
    print(text)
    if args.write:
        print(f"wrote {update_section(text)}")


if __name__ == "__main__":
    main()
