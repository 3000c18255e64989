"""YOLO image classification (ultralytics `yolov8n-cls.yaml`-style models, single-label)
behind the visiongate model interface: meta task "classify".

- Data: the canonical train and val splits are exported to ultralytics' classification
  layout in a derived cache under out_dir, `<out_dir>/yolo-cls-data/<split>/<NNN>/<image>`
  (hard links, else copies): only images with exactly one label
  (`image_labels.single_label_images`). Folder NNN is the category's position 1..K (its id
  in a canonical 1..K dataset), zero-padded so that ultralytics' sorted folder order is the
  category order; every class has a folder in every split, empty or not.
- Trains from the model yaml (nothing downloaded) or a local `classify.weights` file
  through ultralytics' safe loading (visiongate.models.ultralytics_safe); the same
  ultralytics settings, fonts, threads and resume rule as the detectors (models.yolo).
- Augmentation: ultralytics' own classification augmentation (random resized crop, flips,
  HSV, erasing; tune through `ultralytics_args`) and then, before it, the `classify.augment`
  albumentations steps on each training image (ultralytics' classifier ignores its
  `augmentations` argument, so a trainer subclass applies them).
- Resize rule (ultralytics'): the shorter side to imgsz, then a centre crop to imgsz x imgsz,
  at validation and prediction alike.
- Predictions: per image a float32 (K,) array of softmax probabilities in visiongate's class
  order (index k-1 <-> category id k), mapped from ultralytics' class names (the folders).
"""

from __future__ import annotations

import json
import shutil
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from visiongate import augment
from visiongate.datasets.coco import link_or_copy, load_split  # as the YOLO export
from visiongate.datasets.image_labels import single_label_images
from visiongate.devices import ultralytics_device
from visiongate.errors import DataError, ModelError, NotFound
from visiongate.models import OnEpoch
from visiongate.models.local_weights import report_ultralytics_transfer
from visiongate.models.meta import META_FILE, CheckpointMeta
from visiongate.models.samples import category_ids
from visiongate.models.ultralytics_safe import load_weights, refused_as_model_error
from visiongate.models.yolo import (
    _all_cores,
    _epoch_callback,
    _resume_from,
    _ultralytics,
    train_args,
)
from visiongate.runtimes import openvino_precision

EXPORTS = True  # predicts with ONNX / OpenVINO artifacts too (visiongate.export)
TRAIN_SPLITS = ("train", "val")  # test stays out of training; visiongate evaluates on it


def folder_name(position: int, k: int) -> str:
    """Class folder of the category at `position` (1..K): zero-padded, so sorting the
    folder names sorts the categories."""
    return f"{position:0{max(3, len(str(k)))}d}"


def export_classify_layout(data_root: Path, out_dir: Path) -> tuple[Path, list[str]]:
    """Write out_dir/<split>/<NNN>/<image> for train and val; return (out_dir, class names).
    out_dir is a derived cache: it must not lie inside the (DVC-tracked) dataset."""
    data_root, out_dir = Path(data_root).resolve(), Path(out_dir).resolve()
    if out_dir == data_root or data_root in out_dir.parents:
        raise ValueError(f"export dir {out_dir} is inside the dataset {data_root}")
    class_names: list[str] | None = None
    exported = {}
    for name in TRAIN_SPLITS:
        split = load_split(data_root / name)
        if class_names is None:
            class_names = list(split.class_names)
        elif list(split.class_names) != class_names:
            raise DataError(f"{split.root}: categories differ from the train split")
        ids, target = category_ids(split), out_dir / name
        if target.exists():
            shutil.rmtree(target)
        for position in range(1, len(ids) + 1):
            (target / folder_name(position, len(ids))).mkdir(parents=True)
        labelled = single_label_images(split)
        for image, category in labelled:
            folder = target / folder_name(ids.index(category) + 1, len(ids))
            file_name = Path(image["file_name"])
            link_or_copy(split.image_path(image), folder / f"{image['id']}-{file_name.name}")
        exported[name] = len(labelled)
    if not exported["train"]:
        raise DataError(f"{data_root / 'train'}: no image with exactly one label to train on")
    return out_dir, class_names or []


@cache
def _trainer_class():
    """ClassificationTrainer that puts the `augment` steps before ultralytics' transforms
    (built on first use: ultralytics is imported only after its settings are set)."""
    from ultralytics.models.yolo.classify import ClassificationTrainer

    class AlbumentationsClassificationTrainer(ClassificationTrainer):
        steps: tuple = ()
        seed: int = 0

        def build_dataset(self, img_path: str, mode: str = "train", batch=None):
            dataset = super().build_dataset(img_path, mode, batch)
            if mode == "train" and self.steps:
                compose, after = augment.pipeline(list(self.steps), "classify", self.seed), \
                    dataset.torch_transforms
                dataset.torch_transforms = lambda image: after(
                    Image.fromarray(compose(image=np.asarray(image))["image"]))
            return dataset

    return AlbumentationsClassificationTrainer


def _trainer(steps: list, seed: int):
    return type("VisiongateClassificationTrainer", (_trainer_class(),),
                {"steps": tuple(steps), "seed": seed})


def _model(cfg, ultralytics):
    with refused_as_model_error(Path(cfg.model), "Start from a model yaml; give pretrained "
                                "weights as `weights:` (a pickle: pin its sha256)."):
        model = ultralytics.YOLO(cfg.model, task="classify")
    weights = cfg.weights_file()  # checked against the weights rule
    if weights:
        if not weights.exists():
            raise NotFound(f"classify.weights: no local file {weights} (nothing is downloaded)")
        model = load_weights(model, weights, cfg.weights_sha256, "classify")
    return model


def train(cfg, data_root: Path, out_dir: Path, on_epoch: OnEpoch) -> Path:
    """Train (or resume an unfinished run in out_dir) a YOLO classifier."""
    ultralytics = _ultralytics()
    out_dir, config = Path(out_dir), cfg.model_dump(mode="json")
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir, class_names = export_classify_layout(data_root, out_dir / "yolo-cls-data")
    last = _resume_from(out_dir, config)
    (out_dir / META_FILE).unlink(missing_ok=True)
    if last:
        with refused_as_model_error(last):
            model = ultralytics.YOLO(str(last), task="classify")
    else:
        model = _model(cfg, ultralytics)
        if cfg.weights:
            report_ultralytics_transfer(model, "classify", cfg.weights_file(), out_dir)
    (out_dir / "config.json").write_text(json.dumps(config, sort_keys=True))
    model.add_callback("on_fit_epoch_end", _epoch_callback(on_epoch))
    device = ultralytics_device(cfg.device)
    args = train_args(cfg, str(data_dir), out_dir, device)
    if last:
        print(f"yolo classify: resuming the unfinished run from {last}")
        args = {"resume": True, "device": device}
    with _all_cores():
        model.train(trainer=_trainer(cfg.augment, cfg.seed),
                    **{**args, **({} if last else cfg.ultralytics_args)})
    shutil.copy2(Path(model.trainer.best), out_dir / "best.pt")
    CheckpointMeta(family="yolo", task="classify", class_names=class_names,
                   weights="best.pt", config=config).write(out_dir)
    return out_dir


def class_positions(names: dict, k: int, weights: Path) -> np.ndarray:
    """positions[i] = visiongate index (category position - 1) of ultralytics class i."""
    try:
        positions = np.array([int(names[i]) - 1 for i in range(len(names))], np.int64)
    except (KeyError, ValueError, TypeError):
        positions = None
    if positions is None or sorted(positions.tolist()) != list(range(k)):
        raise ModelError(f"{weights}: its class names {dict(names)!r} are not the class "
                         f"folders 1..{k} visiongate trains with; retrain the model")
    return positions


def network(checkpoint: Path, runtime: str = "torch"):
    """The ultralytics model object (its torch module: `.model`): what `load` predicts with,
    and what visiongate.explain looks inside. Another runtime: ultralytics' backend for the
    checked deployment artifact (visiongate.export)."""
    ultralytics = _ultralytics()
    weights = CheckpointMeta.read(checkpoint).artifact_path(checkpoint, runtime)
    if runtime != "torch":  # not a pickle; a file ultralytics cannot load is still a ModelError
        from visiongate.runtimes import checked_artifact

        with refused_as_model_error(weights):
            return ultralytics.YOLO(str(checked_artifact(weights, runtime)),
                                    task="classify")
    with refused_as_model_error(weights):  # a pickle: ultralytics' safe loading only
        return ultralytics.YOLO(str(weights), task="classify")


def load(checkpoint: Path, runtime: str = "torch"):
    """predict(image_paths) with the weights (or a deployment artifact) loaded once: per
    image a float32 (K,) array of softmax probabilities, index k-1 <-> category id k."""
    meta = CheckpointMeta.read(checkpoint)
    weights, model = meta.artifact_path(checkpoint, runtime), network(checkpoint, runtime)
    k = len(meta.class_names)
    positions = class_positions(model.names, k, weights)

    def predict(image_paths: list[Path]) -> list[np.ndarray]:
        if not image_paths:
            return []
        out = []
        # streamed: a Result (and its image) is dropped once converted
        with _all_cores(), openvino_precision(runtime):
            for r in model.predict([str(p) for p in image_paths], imgsz=meta.imgsz,
                                   device=ultralytics_device("auto"), verbose=False, stream=True):
                probs = np.zeros(k, np.float32)
                probs[positions] = r.probs.data.float().cpu().numpy()
                out.append(probs)
        return out

    return predict


def predict(checkpoint: Path, image_paths: list[Path]) -> list[np.ndarray]:
    return load(checkpoint)(image_paths)
