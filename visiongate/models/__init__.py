"""One interface for every model family.

    train(cfg, data_root, out_dir, on_epoch) -> checkpoint directory
    predict(checkpoint, image_paths) -> predictions

A checkpoint is a directory holding `meta.json` and the family's weights file. `meta.json`
is a `CheckpointMeta` (visiongate.models.meta): format_version, family, task, class_names
(the dataset's category names in id order, never a model-made "background"), weights (a
bare file name in the folder) and the config section it was trained with. A meta.json of
another format version is refused (ModelError): retrain. Predictions are plain numpy:

- detection: one dict per image, {"boxes": (N,4) float xyxy pixels, "scores": (N,),
  "labels": (N,) int category ids (1..K, as in the COCO JSON)};
- semantic segmentation: one (H,W) uint8 label map per image (0 = background,
  k = category id k);
- instance segmentation: detection dicts plus "masks" (N,H,W) bool at the image's size;
- classification (meta task "classify") and multi-label classification ("multilabel"): one
  float32 (K,) array per image, the class probabilities, index k-1 <-> category id k
  (class_names order): softmax for "classify", independent sigmoids for "multilabel". A
  multilabel checkpoint also stores per-class decision thresholds in meta.json
  (`thresholds`), chosen on the val split right after training (`train` below).

Families (params.yaml `family:`): detect — yolo, rtdetr (ultralytics), fasterrcnn,
retinanet, ssdlite (torchvision); segment — unet, fcn, deeplabv3 (semantic, meta task
"segment"), yolo, maskrcnn (instance, meta task "instance"); classify — yolo (ultralytics,
single-label), resnet18, mobilenet_v3_small, efficientnet_b0 (torchvision).
"""

from __future__ import annotations

import dataclasses
import importlib
import pickle
import shutil
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from visiongate import progress
from visiongate.errors import ModelError
from visiongate.models.meta import META_FILE, CheckpointMeta

__all__ = ["CheckpointMeta", "OnEpoch", "export_checkpoint", "load", "predict", "served", "train"]

OnEpoch = Callable[[int, dict[str, float]], None]
"""Called after each epoch with (epoch starting at 1, metrics such as losses and val scores)."""


_MODULES = {"yolo": "yolo", "rtdetr": "yolo", "unet": "unet",
            "fasterrcnn": "torchvision_detect", "retinanet": "torchvision_detect",
            "ssdlite": "torchvision_detect", "maskrcnn": "torchvision_detect",
            "fcn": "torchvision_segment", "deeplabv3": "torchvision_segment"}
# classification families have their own modules: classify's "yolo" is not detect's
_CLASSIFY_MODULES = {"yolo": "yolo_classify", "resnet18": "classify",
                     "mobilenet_v3_small": "classify", "efficientnet_b0": "classify"}
CLASSIFY_TASKS = ("classify", "multilabel")
PREDICT_CHUNK = 256  # images per call of a loaded model in `predict` (its bar's step)


def _family_module(family: str, task: str | None = None):
    """The module implementing a family for a task (meta task or config `.task`)."""
    modules = _CLASSIFY_MODULES if task in CLASSIFY_TASKS else _MODULES
    if family not in modules:
        raise ModelError(f"unknown model family {family!r}"
                         f"{' for ' + task if task else ''}; choose from {sorted(modules)}")
    return importlib.import_module(f"visiongate.models.{modules[family]}")


def train(cfg: Any, data_root: Path, out_dir: Path, on_epoch: OnEpoch | None = None) -> Path:
    """Train the family named in `cfg.family` on the canonical dataset at `data_root`.

    A second call with the same out_dir after a crash resumes from its last checkpoint.
    A multilabel model then gets its per-class thresholds (see `_store_thresholds`)."""
    module, on_epoch = _family_module(cfg.family, cfg.task), on_epoch or (lambda e, m: None)
    if getattr(cfg, "nproc", 1) > 1:  # plain-torch families on several processes
        from visiongate.models import distributed

        checkpoint = distributed.train(module, cfg, Path(data_root), Path(out_dir), on_epoch)
    else:
        checkpoint = module.train(cfg, Path(data_root), Path(out_dir), on_epoch)
    if cfg.task == "multilabel":
        _store_thresholds(Path(checkpoint), Path(data_root) / "val", cfg.target_precision)
    return checkpoint


def _store_thresholds(checkpoint: Path, val_dir: Path, target_precision: float | None) -> None:
    """Predict the val split and store one threshold per class in meta.json, as
    `visiongate.classify_metrics.choose_thresholds` picks them: the best F1, or the lowest
    threshold reaching `target_precision`."""
    import numpy as np

    from visiongate.classify_metrics import choose_thresholds
    from visiongate.datasets.coco import load_split
    from visiongate.datasets.image_labels import split_targets

    split, meta = load_split(val_dir), CheckpointMeta.read(checkpoint)
    ids = sorted(c["id"] for c in split.categories)
    targets = np.zeros((len(split.images), len(ids)), bool)
    for row, labels in enumerate(split_targets(split, multi_label=True)):
        targets[row, [ids.index(c) for c in labels]] = True
    paths = [split.image_path(image) for image in split.images]
    probs = np.stack(load(checkpoint)(paths)) if paths else np.zeros((0, len(ids)), np.float32)
    thresholds = choose_thresholds(probs, targets, target_precision)
    dataclasses.replace(meta, thresholds=tuple(float(t) for t in thresholds)).write(checkpoint)


def load(checkpoint: Path, runtime: str = "torch") -> Callable[[list[Path]], list]:
    """The checkpoint's predict with its weights loaded once (serving, batch prediction):
    load(checkpoint)(image_paths) == predict(checkpoint, image_paths).

    `runtime` "torch" predicts with the weights; "onnx" / "openvino" / "openvino-bf16" with
    a deployment artifact of the folder (visiongate.export; ultralytics families and the
    U-Net), the same pre- and post-processing around it. `served` loads the runtime
    meta.json names.

    Detections (and instances) are post-processed as the checkpoint's config says, the same
    for every family: score >= `conf`, then NMS at `nms_iou`, per class or over all classes
    (`class_agnostic_nms`). A checkpoint that cannot be loaded is a ModelError naming it;
    an error while predicting is not the checkpoint's fault and propagates unchanged."""
    checkpoint = Path(checkpoint)
    meta = CheckpointMeta.read(checkpoint)
    module = _family_module(meta.family, meta.task)
    with _clear_load_errors(meta.artifact_path(checkpoint, runtime)):
        raw = module.load(checkpoint) if runtime == "torch" else \
            _exported(module, meta).load(checkpoint, runtime=runtime)
    cfg, takes_conf = meta.config, getattr(module, "PREDICT_CONF", False)

    def predict_images(image_paths: list[Path], min_score: float | None = None) -> list:
        """`min_score` (detections): only what scores at least this much is wanted, so the
        model and NMS skip everything below it (the same boxes above it: NMS drops a box
        only for a higher-scoring one)."""
        conf = cfg.get("conf", 0.0) if min_score is None else max(cfg.get("conf", 0.0), min_score)
        predictions = raw(list(image_paths), conf=conf) if takes_conf and min_score is not None \
            else raw(list(image_paths))
        if meta.task not in ("detect", "instance"):
            return predictions
        from visiongate.diagnostics import postprocess

        return [postprocess(p, conf, cfg.get("nms_iou", 1.0),
                            cfg.get("class_agnostic_nms", False)) for p in predictions]

    predict_images.takes_min_score = True
    return predict_images


def served(checkpoint: Path) -> Callable[[list[Path]], list]:
    """`load` with the runtime the checkpoint serves with (meta.json `runtime`)."""
    return load(checkpoint, CheckpointMeta.read(checkpoint).runtime)


def _exported(module, meta: CheckpointMeta):
    """The family module, if it predicts with deployment artifacts."""
    if not getattr(module, "EXPORTS", False):
        raise ModelError(f"family {meta.family!r} ({meta.task}) has no deployment artifacts; "
                         f"it predicts with its weights (runtime 'torch')")
    return module


def predict(checkpoint: Path, image_paths: list[Path], runtime: str = "torch") -> list:
    """Predictions for each image (see `load`), PREDICT_CHUNK images at a time under a
    progress bar (visiongate.progress)."""
    model, paths = load(checkpoint, runtime), list(image_paths)
    out: list = []
    with progress.bar(total=len(paths), desc=f"predict {Path(checkpoint).name}") as shown:
        for start in range(0, len(paths), PREDICT_CHUNK):
            out.extend(model(paths[start:start + PREDICT_CHUNK]))
            shown.update(len(paths[start:start + PREDICT_CHUNK]))
    return out


@contextmanager
def _clear_load_errors(weights: Path):
    """Failures while *loading* weights (unpickling, a broken zip, a missing or unreadable
    file, a state dict that does not fit the model) as one ModelError naming the file."""
    try:
        yield
    except (EOFError, OSError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile,
            RuntimeError) as err:
        raise ModelError(f"{weights}: the checkpoint cannot be loaded — truncated or "
                         f"corrupted? ({type(err).__name__}: {str(err)[:300]})") from err


def export_checkpoint(checkpoint: Path, out_dir: Path) -> Path:
    """Copy only what serving needs (meta.json, weights, the deployment artifacts that passed
    their parity check) into out_dir, for logging."""
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = CheckpointMeta.read(checkpoint)
    for name in (META_FILE, meta.weights):
        shutil.copy2(checkpoint / name, out_dir / name)
    for source in {meta.artifact_path(checkpoint, runtime) for runtime in meta.artifacts or {}}:
        if source.is_dir():  # openvino and openvino-bf16 share one
            shutil.copytree(source, out_dir / source.name, dirs_exist_ok=True)
        else:
            shutil.copy2(source, out_dir / source.name)
    return out_dir
