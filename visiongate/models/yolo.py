"""Ultralytics YOLO detector behind the visiongate model interface.

Trains from a model yaml (from scratch, nothing downloaded) or from a local weights file.
Ultralytics' own integrations (its MLflow callback, analytics) are switched off in a
settings file visiongate owns, so the user's Ultralytics settings are never changed;
per-epoch metrics go to `on_epoch` instead, i.e. to the MLflow run the flow owns.
"""

from __future__ import annotations

import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from visiongate.datasets.coco import export_yolo, load_split
from visiongate.devices import select_device
from visiongate.models import OnEpoch, read_meta, write_meta

_INTEGRATIONS = ("mlflow", "sync", "clearml", "comet", "dvc", "neptune", "raytune", "tensorboard",
                 "wandb")


@contextmanager
def _all_cores():
    """Ultralytics trains on cpu_count - 1 threads (1 of 2 cores here, half the speed) and
    leaves torch's thread count and deterministic mode changed for whatever runs next."""
    from ultralytics.utils import torch_utils

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch_utils.NUM_THREADS = threads
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _ultralytics():
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path.home() / ".cache" / "visiongate" / "ultralytics"))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import ultralytics
    from ultralytics import settings

    switched_on = {k: False for k in _INTEGRATIONS if settings.get(k)}
    if switched_on:
        settings.update(switched_on)
    return ultralytics


def _metric_name(key: str) -> str:
    """'metrics/mAP50-95(B)' -> 'metrics/mAP50-95'; MLflow refuses parentheses."""
    return re.sub(r"[^\w\-./ :]", "", key.replace("(B)", "").replace("(M)", "_mask"))


def _epoch_callback(on_epoch: OnEpoch):
    def callback(trainer) -> None:
        metrics = dict(trainer.label_loss_items(trainer.tloss, prefix="train"))
        metrics.update(trainer.metrics or {})
        metrics.update({f"lr/{k}": v for k, v in (trainer.lr or {}).items()})
        on_epoch(trainer.epoch + 1, {_metric_name(k): float(v) for k, v in metrics.items()})

    return callback


def _device(spec: str) -> str | int:
    """visiongate's device spec in ultralytics' terms ('cpu', 'mps' or a CUDA index)."""
    device = select_device(spec)
    return (device.index or 0) if device.type == "cuda" else device.type


def train(cfg, data_root: Path, out_dir: Path, on_epoch: OnEpoch) -> Path:
    ultralytics = _ultralytics()
    out_dir.mkdir(parents=True, exist_ok=True)
    data_yaml = export_yolo(data_root, out_dir / "yolo-data")
    class_names = list(load_split(data_root / "train").class_names)
    model = ultralytics.YOLO(cfg.model, task="detect")
    if cfg.weights:
        weights = Path(cfg.weights)
        if not weights.is_file():
            raise FileNotFoundError(f"detect.weights: no local file {weights} (nothing is downloaded)")
        model = model.load(str(weights))
    model.add_callback("on_fit_epoch_end", _epoch_callback(on_epoch))
    device = _device(cfg.device)
    # nbs = batch: one optimizer step per batch. Ultralytics' default accumulates to 64
    # images, i.e. 4 steps per epoch on a 256-image set: from scratch that learns ~3x slower.
    args = dict(data=str(data_yaml), epochs=cfg.epochs, imgsz=cfg.imgsz, batch=cfg.batch,
                nbs=cfg.batch, optimizer="AdamW", lr0=cfg.lr, seed=cfg.seed, deterministic=True, device=device,
                amp=isinstance(device, int), project=str(out_dir), name="ultralytics",
                exist_ok=True, plots=False, workers=0, verbose=False, pretrained=False)
    with _all_cores():
        model.train(**{**args, **cfg.ultralytics_args})
    shutil.copy2(Path(model.trainer.best), out_dir / "best.pt")
    write_meta(out_dir, family="yolo", task="detect", class_names=class_names, weights="best.pt",
               config=cfg.model_dump(mode="json"), imgsz=cfg.imgsz)
    return out_dir


def predict(checkpoint: Path, image_paths: list[Path]) -> list[dict[str, np.ndarray]]:
    ultralytics = _ultralytics()
    meta = read_meta(checkpoint)
    model = ultralytics.YOLO(str(checkpoint / meta["weights"]), task="detect")
    cfg = meta["config"]
    with _all_cores():
        results = model.predict([str(p) for p in image_paths], imgsz=meta["imgsz"],
                                conf=cfg["conf"], iou=cfg["nms_iou"], device=_device("auto"),
                                verbose=False)
    return [{"boxes": r.boxes.xyxy.cpu().numpy().astype(np.float32),
             "scores": r.boxes.conf.cpu().numpy().astype(np.float32),
             "labels": r.boxes.cls.cpu().numpy().astype(np.int64) + 1} for r in results]
