"""Ultralytics families behind the visiongate model interface: YOLO and RT-DETR detectors
(task "detect") and YOLO-seg (task "instance", polygon labels exported here).

Trains from a model yaml (from scratch, nothing downloaded) or from a local weights file.
Ultralytics `.pt` files are pickles: every one (weights, last.pt on resume, best.pt when
predicting) is read with ultralytics' safe loading only (visiongate.models.ultralytics_safe).
Ultralytics' own integrations (its MLflow callback, analytics) are switched off in a
settings file visiongate owns, so the user's Ultralytics settings are never changed;
per-epoch metrics go to `on_epoch` instead, i.e. to the MLflow run the flow owns.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import torch

from visiongate.augment import build_transforms
from visiongate.datasets.coco import SPLITS, export_yolo, load_split
from visiongate.devices import ultralytics_device
from visiongate.errors import NotFound
from visiongate.models import OnEpoch
from visiongate.models.local_weights import report_ultralytics_transfer
from visiongate.models.meta import META_FILE, CheckpointMeta
from visiongate.models.samples import ann_mask, category_ids
from visiongate.models.torch_loop import same_run
from visiongate.models.ultralytics_safe import ENV as SAFE_LOAD_ENV
from visiongate.models.ultralytics_safe import enforce, load_weights, refused_as_model_error
from visiongate.runtimes import openvino_precision

EXPORTS = True  # predicts with ONNX / OpenVINO artifacts too (visiongate.export)
PREDICT_CONF = True  # its predict takes a higher score floor than the config's `conf`
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
    # ultralytics patches PIL.Image.open and would pip-install pi-heif on an unknown format
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ[SAFE_LOAD_ENV] = "1"  # .pt files are pickles: only ever safe loading
    import ultralytics
    from ultralytics import settings

    enforce()

    switched_on = {k: False for k in _INTEGRATIONS if settings.get(k)}
    if switched_on:
        settings.update(switched_on)
    _local_fonts()
    return ultralytics


def _local_fonts() -> None:
    """Ultralytics checks for Arial before training and, when missing, asks the network for
    it (a HEAD request, then a download). Its plots are off here: any local font will do, so
    give it matplotlib's bundled DejaVu Sans under the names it looks for."""
    import matplotlib
    from ultralytics.utils import USER_CONFIG_DIR

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = Path(USER_CONFIG_DIR) / name
        if not target.exists() and source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


def _metric_name(key: str) -> str:
    """'metrics/mAP50-95(B)' -> 'metrics/mAP50-95'; MLflow refuses parentheses."""
    return re.sub(r"[^\w\-./ :]", "", key.replace("(B)", "").replace("(M)", "_mask"))


def _epoch_callback(on_epoch: OnEpoch):
    def callback(trainer) -> None:
        if trainer.epoch >= trainer.epochs:  # ultralytics' final re-validation of best.pt
            return
        metrics = dict(trainer.label_loss_items(trainer.tloss, prefix="train"))
        metrics.update(trainer.metrics or {})
        metrics.update({f"lr/{k}": v for k, v in (trainer.lr or {}).items()})
        on_epoch(trainer.epoch + 1, {_metric_name(k): float(v) for k, v in metrics.items()})

    return callback


def _segment_lines(split, image: dict, ids: list[int]) -> list[str]:
    """`cls x1 y1 x2 y2 ...` (normalised polygon) per object; several visible parts are
    joined into one outline as ultralytics' own COCO converter does."""
    from ultralytics.data.converter import merge_multi_segment

    width, height = image["width"], image["height"]
    lines = []
    for ann in split.annotations.get(image["id"], []):
        if ann.get("iscrowd", 0):
            continue
        seg = ann.get("segmentation")
        if not isinstance(seg, list) or not seg:  # RLE or none: trace the decoded mask
            mask = ann_mask(ann, height, width)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            seg = [c.reshape(-1).tolist() for c in contours if len(c) >= 3]
        if not seg:
            continue
        points = np.concatenate(merge_multi_segment(seg), 0) if len(seg) > 1 else \
            np.asarray(seg[0], np.float64).reshape(-1, 2)
        points = np.clip(points / [width, height], 0, 1).reshape(-1)
        cls = ids.index(ann["category_id"])
        lines.append(f"{cls} " + " ".join(f"{v:.6f}" for v in points))
    return lines


def export_yolo_segments(data_root: Path, out_dir: Path) -> Path:
    """The YOLO layout with polygon labels (ultralytics segment); returns data.yaml."""
    data_yaml = export_yolo(data_root, out_dir)
    for name in SPLITS:
        if not (Path(data_root) / name / "annotations.json").is_file():
            continue
        split = load_split(Path(data_root) / name)
        ids = category_ids(split)
        for image in split.images:
            label = Path(out_dir) / "labels" / name / (Path(image["file_name"]).stem + ".txt")
            label.write_text("".join(line + "\n" for line in _segment_lines(split, image, ids)))
    return data_yaml


def _resume_from(out_dir: Path, config: dict) -> Path | None:
    """ultralytics' last.pt of an unfinished run with the same config, if any."""
    last, saved = out_dir / "ultralytics" / "weights" / "last.pt", out_dir / "config.json"
    if not (last.is_file() and saved.is_file()) or not same_run(json.loads(saved.read_text()), config):
        return None
    # meta.json is written when a run finishes and removed when one starts, so its absence
    # means the run died (no need to unpickle ultralytics' checkpoint to read its epoch)
    return None if (out_dir / META_FILE).is_file() else last


def _model(cfg, ultralytics, task: str):
    cls = ultralytics.RTDETR if cfg.family == "rtdetr" else ultralytics.YOLO
    with refused_as_model_error(Path(cfg.model), "Start from a model yaml; give pretrained "
                                "weights as `weights:` (a pickle: pin its sha256)."):
        model = cls(cfg.model) if cfg.family == "rtdetr" else cls(cfg.model, task=task)
    weights = cfg.weights_file()  # checked against the weights rule
    if weights:
        if not weights.exists():
            raise NotFound(f"{cfg.SECTION}.weights: no local file {weights} (nothing is "
                           "downloaded)")
        model = load_weights(model, weights, cfg.weights_sha256, cfg.SECTION)
    return model


def _resumed(last: Path, cfg, ultralytics, task: str):
    """The crashed run's last.pt, safe-loaded like any other ultralytics checkpoint."""
    with refused_as_model_error(last):
        return ultralytics.RTDETR(str(last)) if cfg.family == "rtdetr" else \
            ultralytics.YOLO(str(last), task=task)


def train_args(cfg, data: str, out_dir: Path, device: str) -> dict:
    """The arguments of ultralytics' train() for a fresh run (every ultralytics family)."""
    # nbs = batch: one optimizer step per batch. Ultralytics' default accumulates to 64
    # images, i.e. 4 steps per epoch on a 256-image set: from scratch that learns ~3x slower.
    return {"data": data, "epochs": cfg.epochs, "imgsz": cfg.imgsz, "batch": cfg.batch,
            "nbs": cfg.batch, "optimizer": "AdamW", "lr0": cfg.lr, "seed": cfg.seed,
            "deterministic": True, "device": device, "amp": device not in ("cpu", "mps"),
            "project": str(out_dir), "name": "ultralytics", "exist_ok": True, "plots": False,
            "workers": 0, "verbose": False,
            # with `weights:`, train from the loaded model (ultralytics rebuilds the model for
            # the dataset's classes and transfers its tensors; False would start afresh)
            "pretrained": bool(cfg.weights)}


def train(cfg, data_root: Path, out_dir: Path, on_epoch: OnEpoch) -> Path:
    """Train (or resume an unfinished run in out_dir); YOLO, RT-DETR or YOLO-seg."""
    ultralytics = _ultralytics()
    task = "segment" if cfg.task == "instance" else "detect"
    out_dir, config = Path(out_dir), cfg.model_dump(mode="json")
    out_dir.mkdir(parents=True, exist_ok=True)
    export = export_yolo_segments if task == "segment" else export_yolo
    data_yaml = export(data_root, out_dir / "yolo-data")
    class_names = list(load_split(data_root / "train").class_names)
    last = _resume_from(out_dir, config)
    (out_dir / META_FILE).unlink(missing_ok=True)
    model = _resumed(last, cfg, ultralytics, task) if last else _model(cfg, ultralytics, task)
    if cfg.weights and not last:
        report_ultralytics_transfer(model, cfg.SECTION, cfg.weights_file(), out_dir)
    (out_dir / "config.json").write_text(json.dumps(config, sort_keys=True))
    model.add_callback("on_fit_epoch_end", _epoch_callback(on_epoch))
    device = ultralytics_device(cfg.device)
    args = train_args(cfg, str(data_yaml), out_dir, device)
    if cfg.augment:
        args["augmentations"] = build_transforms(cfg.augment)
    if last:
        print(f"{cfg.family}: resuming the unfinished run from {last}")
        args = {"resume": True, "device": device, **({"augmentations": args["augmentations"]}
                                                     if cfg.augment else {})}
    with _all_cores():
        model.train(**{**args, **({} if last else cfg.ultralytics_args)})
    shutil.copy2(Path(model.trainer.best), out_dir / "best.pt")
    CheckpointMeta(family=cfg.family, task=cfg.task, class_names=class_names,
                   weights="best.pt", config=config).write(out_dir)
    return out_dir


def _to_numpy(r, instance: bool) -> dict[str, np.ndarray]:
    height, width = r.orig_shape  # RT-DETR's boxes may reach past the image: clip them
    boxes = np.clip(r.boxes.xyxy.cpu().numpy(), 0, [width, height, width, height])
    pred = {"boxes": boxes.astype(np.float32),
            "scores": r.boxes.conf.cpu().numpy().astype(np.float32),
            "labels": r.boxes.cls.cpu().numpy().astype(np.int64) + 1}
    if instance:
        pred["masks"] = (r.masks.data.cpu().numpy() > 0.5) if r.masks is not None else \
            np.zeros((0, *r.orig_shape), bool)
    return pred


def network(checkpoint: Path, runtime: str = "torch"):
    """The ultralytics model object (its torch module: `.model`): what `load` predicts with,
    and what visiongate.explain looks inside. Another runtime: ultralytics' backend for the
    checked deployment artifact (visiongate.export)."""
    ultralytics = _ultralytics()
    meta = CheckpointMeta.read(checkpoint)
    weights, instance = meta.artifact_path(checkpoint, runtime), meta.task == "instance"
    if runtime != "torch":  # not a pickle; a file ultralytics cannot load is still a ModelError
        from visiongate.runtimes import checked_artifact

        with refused_as_model_error(weights):  # RT-DETR's own predictor: no NMS
            artifact = str(checked_artifact(weights, runtime))
            return ultralytics.RTDETR(artifact) if meta.family == "rtdetr" else \
                ultralytics.YOLO(artifact, task="segment" if instance else "detect")
    with refused_as_model_error(weights):  # a pickle: ultralytics' safe loading only
        return ultralytics.RTDETR(str(weights)) if meta.family == "rtdetr" else \
            ultralytics.YOLO(str(weights), task="segment" if instance else "detect")


def load(checkpoint: Path, runtime: str = "torch"):
    """predict(image_paths) with the weights (or a deployment artifact) loaded once. Per
    image: boxes, scores, labels (category ids 1..K); YOLO-seg adds masks (N,H,W) bool at
    the image's own size."""
    meta = CheckpointMeta.read(checkpoint)
    cfg, instance = meta.config, meta.task == "instance"
    model = network(checkpoint, runtime)

    def predict(image_paths: list[Path], conf: float | None = None) -> list[dict[str, np.ndarray]]:
        # stream: each ultralytics Result (which holds its decoded image) is converted and
        # dropped before the next image, so memory does not grow with the image count
        with _all_cores(), openvino_precision(runtime):
            results = model.predict([str(p) for p in image_paths], imgsz=meta.imgsz,
                                    conf=cfg["conf"] if conf is None else conf,
                                    iou=cfg["nms_iou"],
                                    device=ultralytics_device("auto"), retina_masks=instance,
                                    verbose=False, stream=True)
            return [_to_numpy(r, instance) for r in results]

    return predict


def predict(checkpoint: Path, image_paths: list[Path]) -> list[dict[str, np.ndarray]]:
    return load(checkpoint)(image_paths)
