"""One interface for every model family.

    train(cfg, data_root, out_dir, on_epoch) -> checkpoint directory
    predict(checkpoint, image_paths) -> predictions

A checkpoint is a directory holding `meta.json` (family, task, class names, the config
section it was trained with) and the family's weights file. Predictions are plain numpy:

- detection: one dict per image, {"boxes": (N,4) float xyxy pixels, "scores": (N,),
  "labels": (N,) int category ids (1..K, as in the COCO JSON)};
- semantic segmentation: one (H,W) uint8 label map per image (0 = background,
  k = category id k);
- instance segmentation: detection dicts plus "masks" (N,H,W) bool at the image's size.

Families (params.yaml `family:`): detect — yolo, rtdetr (ultralytics), fasterrcnn,
retinanet, ssdlite (torchvision); segment — unet, fcn, deeplabv3 (semantic, meta task
"segment"), yolo, maskrcnn (instance, meta task "instance").
"""

from __future__ import annotations

import importlib
import json
import pickle
import shutil
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

OnEpoch = Callable[[int, dict[str, float]], None]
"""Called after each epoch with (epoch starting at 1, metrics such as losses and val scores)."""


def read_meta(checkpoint: Path) -> dict[str, Any]:
    meta_path = Path(checkpoint) / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{checkpoint} is not a visiongate checkpoint (no meta.json)")
    return json.loads(meta_path.read_text())


def write_meta(checkpoint: Path, **meta: Any) -> None:
    Path(checkpoint).mkdir(parents=True, exist_ok=True)
    (Path(checkpoint) / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))


_MODULES = {"yolo": "yolo", "rtdetr": "yolo", "unet": "unet",
            "fasterrcnn": "torchvision_detect", "retinanet": "torchvision_detect",
            "ssdlite": "torchvision_detect", "maskrcnn": "torchvision_detect",
            "fcn": "torchvision_segment", "deeplabv3": "torchvision_segment"}


def _family_module(family: str):
    if family not in _MODULES:
        raise ValueError(f"unknown model family {family!r}; choose from {sorted(_MODULES)}")
    return importlib.import_module(f"visiongate.models.{_MODULES[family]}")


def train(cfg: Any, data_root: Path, out_dir: Path, on_epoch: OnEpoch | None = None) -> Path:
    """Train the family named in `cfg.family` on the canonical dataset at `data_root`.

    A second call with the same out_dir after a crash resumes from its last checkpoint."""
    return _family_module(cfg.family).train(cfg, Path(data_root), Path(out_dir), on_epoch or (lambda e, m: None))


def load(checkpoint: Path) -> Callable[[list[Path]], list]:
    """The checkpoint's predict with its weights loaded once (serving, batch prediction):
    load(checkpoint)(image_paths) == predict(checkpoint, image_paths).

    Detections (and instances) are post-processed as the checkpoint's config says, the same
    for every family: score >= `conf`, then NMS at `nms_iou`, per class or over all classes
    (`class_agnostic_nms`). A checkpoint that cannot be loaded is a ValueError naming it."""
    checkpoint = Path(checkpoint)
    meta = read_meta(checkpoint)
    module = _family_module(meta["family"])
    with _clear_load_errors(checkpoint, meta):
        raw = module.load(checkpoint) if hasattr(module, "load") else \
            (lambda paths: module.predict(checkpoint, paths))
    cfg = meta.get("config", {})

    def predict_images(image_paths: list[Path]) -> list:
        with _clear_load_errors(checkpoint, meta):
            predictions = raw(list(image_paths))
        if meta["task"] not in ("detect", "instance"):
            return predictions
        from visiongate.diagnostics import postprocess

        return [postprocess(p, cfg.get("conf", 0.0), cfg.get("nms_iou", 1.0),
                            cfg.get("class_agnostic_nms", False)) for p in predictions]

    return predict_images


def predict(checkpoint: Path, image_paths: list[Path]) -> list:
    """Predictions for each image (see `load`)."""
    return load(checkpoint)(image_paths)


@contextmanager
def _clear_load_errors(checkpoint: Path, meta: dict):
    try:
        yield
    except (EOFError, pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError) as err:
        weights = Path(checkpoint) / meta.get("weights", "?")
        raise ValueError(f"{weights}: the checkpoint cannot be loaded or run — truncated or "
                         f"corrupted? ({type(err).__name__}: {str(err)[:300]})") from err


def export_checkpoint(checkpoint: Path, out_dir: Path) -> Path:
    """Copy only what serving needs (meta.json + weights) into out_dir, for logging."""
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("meta.json", read_meta(checkpoint)["weights"]):
        shutil.copy2(checkpoint / name, out_dir / name)
    return out_dir
