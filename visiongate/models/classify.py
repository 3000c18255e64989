"""torchvision image classifiers (resnet18, mobilenet_v3_small, efficientnet_b0) behind the
visiongate model interface, single-label (task "classify") or multi-label ("multilabel").

- Built with `weights=None` and `num_classes=K` (nothing is downloaded); optionally started
  from a local `classify.weights` file: a whole-model state dict or a backbone-only one
  (`model.features` of mobilenet/efficientnet, or any subset of the model's keys; a
  `module.` prefix is dropped). Tensors that fit load; a head for another class count is
  left freshly initialised; a log line says what loaded and what was re-initialised.
- Resize rule: every image is resized to imgsz x imgsz (plain bilinear resize, no crop, no
  letterbox: nothing of the image is cut off, a non-square image is stretched), the same at
  training, validation and prediction; then ImageNet mean/std normalisation.
- Targets (visiongate.datasets.image_labels): single-label trains with cross-entropy on the
  images with exactly one label; multi-label with BCE-with-logits on multi-hot targets of
  every image (an image without labels is all-negative). Index k-1 <-> category id k.
- Training augmentation: the `classify.augment` albumentations steps, image only.
- The loop is `visiongate.models.torch_loop` (AdamW, AMP on CUDA, checkpoints every epoch,
  resume); the best epoch is the best val accuracy (single-label) or val mAP (multi-label,
  sklearn's average precision, averaged over the classes present in val).
- Predictions: per image a float32 (K,) array of probabilities: softmax for "classify",
  independent sigmoids for "multilabel".
"""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import models as tvm

from visiongate import augment
from visiongate.datasets import safe_load
from visiongate.datasets.coco import load_split
from visiongate.datasets.image_labels import single_label_images, split_targets
from visiongate.devices import amp_enabled, select_device
from visiongate.errors import ConfigError, DataError
from visiongate.models import OnEpoch
from visiongate.models.meta import CheckpointMeta
from visiongate.models.samples import category_ids
from visiongate.models.local_weights import WeightsReport, load_weights_file
from visiongate.models.torch_loop import Recipe, fit, seed_everything

_BUILDERS = {"resnet18": tvm.resnet18, "mobilenet_v3_small": tvm.mobilenet_v3_small,
             "efficientnet_b0": tvm.efficientnet_b0}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build_model(family: str, num_classes: int) -> nn.Module:
    if family not in _BUILDERS:
        raise ConfigError(f"classify.family {family!r}: choose from {sorted(_BUILDERS)}")
    return _BUILDERS[family](weights=None, num_classes=num_classes)


def load_classifier_weights(model: nn.Module, path: str | Path | None, pinned: str | None
                            ) -> WeightsReport | None:
    """Start from a local weights file (tensors only, weights_only loading; sha256 checked
    when pinned): the whole model, or a backbone saved on its own (`features.` missing).
    Tensors of another shape (a head for another class count) and tensors the file lacks
    stay as built (freshly initialised); the report says which (local_weights)."""
    return load_weights_file(model, path, "classify", pinned, (("", "features."),))


def initial_model(cfg, num_classes: int) -> tuple[nn.Module, WeightsReport | None]:
    """The classifier training starts from and the report of its `weights:` file (checked
    against the weights rule), or None without one."""
    model = build_model(cfg.family, num_classes)
    return model, load_classifier_weights(model, cfg.weights_file(), cfg.weights_sha256)


def read_image(path: Path, imgsz: int) -> np.ndarray:
    """(imgsz, imgsz, 3) uint8 RGB: the resize rule of this module (plain bilinear resize).
    The pixel count is checked from the header before decoding."""
    with safe_load.pixel_guard(path), Image.open(path) as im:
        safe_load.check_pixels(im.size, path)
        return np.asarray(im.convert("RGB").resize((imgsz, imgsz), Image.BILINEAR))


def read_split(split_dir: Path, imgsz: int, multi_label: bool
               ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (N,S,S,3 uint8), targets ((N,) int64 class index, or (N,K) float32 multi-hot)
    and class names (category-id order) of a split."""
    split = load_split(split_dir)
    ids = category_ids(split)
    if multi_label:
        pairs = list(zip(split.images, split_targets(split, True), strict=True))
    else:
        pairs = [(image, [label]) for image, label in single_label_images(split)]
    images = [read_image(split.image_path(image), imgsz) for image, _ in pairs]
    index = [[ids.index(c) for c in labels] for _, labels in pairs]
    if multi_label:
        targets = np.zeros((len(pairs), len(ids)), np.float32)
        for row, columns in enumerate(index):
            targets[row, columns] = 1.0
    else:
        targets = np.array([cols[0] for cols in index], np.int64)
    stacked = np.stack(images) if images else np.zeros((0, imgsz, imgsz, 3), np.uint8)
    return stacked, targets, list(split.class_names)


class ImageTargets(Dataset):
    """In-memory (image, target) pairs; the augmentation is applied to the image only."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, transform: A.Compose | None = None):
        self.images, self.targets, self.transform = images, targets, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[i]
        if self.transform is not None and self.transform.transforms:
            size = image.shape[:2]
            image = self.transform(image=image)["image"]
            if image.shape[:2] != size:  # a crop or resize step: back to imgsz
                image = cv2.resize(image, size[::-1], interpolation=cv2.INTER_LINEAR)
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        return image, torch.as_tensor(self.targets[i])


def to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B,3,H,W) -> ImageNet-normalised float."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (images.to(device, non_blocking=True).float() / 255.0 - mean) / std


def _loss(logits: torch.Tensor, targets: torch.Tensor, multi_label: bool) -> torch.Tensor:
    logits = logits.float()
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, targets.float())
    return F.cross_entropy(logits, targets)


def _probabilities(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    logits = logits.float()
    return logits.sigmoid() if multi_label else logits.softmax(dim=1)


def val_scores(probs: np.ndarray, targets: np.ndarray, multi_label: bool) -> dict[str, float]:
    """val_accuracy (top-1), or val_map: sklearn's average precision per class with at least
    one positive in val, averaged (nan when no class has one)."""
    if not multi_label:
        return {"val_accuracy": float(np.mean(probs.argmax(1) == targets)) if len(targets) else
                float("nan")}
    from sklearn.metrics import average_precision_score

    aps = [average_precision_score(targets[:, k], probs[:, k])
           for k in range(targets.shape[1]) if targets[:, k].any()]
    return {"val_map": float(np.mean(aps)) if aps else float("nan")}


def _recipe(cfg, model: nn.Module, train_dl: DataLoader, val_dl: DataLoader, gen, transform,
            device: torch.device, class_names: list[str]) -> Recipe:
    multi = cfg.multi_label

    def loss(model, batch):
        images, targets = batch
        return _loss(model(to_input(images, device)), targets.to(device), multi), {}

    def validate(model) -> dict[str, float]:
        total, probs, targets = 0.0, [], []
        for images, y in val_dl:
            with torch.autocast(device.type, enabled=amp_enabled(device)):
                logits = model(to_input(images, device))
            total += float(_loss(logits, y.to(device), multi)) * len(y)
            probs.append(_probabilities(logits, multi).cpu().numpy())
            targets.append(y.numpy())
        n = sum(len(t) for t in targets)
        scores = val_scores(np.concatenate(probs), np.concatenate(targets), multi) if n else \
            {("val_map" if multi else "val_accuracy"): float("nan")}
        return {"val_loss": total / max(n, 1), **scores}

    def reseed(seed: int) -> None:
        gen.manual_seed(seed)
        transform.set_random_seed(seed)

    return Recipe(cfg.family, model, lambda: train_dl, len(train_dl), loss, validate,
                  "val_map" if multi else "val_accuracy", reseed,
                  {"class_names": class_names})


def train(cfg, data_root: Path, out_dir: Path, on_epoch: OnEpoch) -> Path:
    """Train on <data_root>/train; keep the epoch with the best <data_root>/val score."""
    seed_everything(cfg.seed)
    device, out_dir, data_root = select_device(cfg.device), Path(out_dir), Path(data_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_x, train_y, class_names = read_split(data_root / "train", cfg.imgsz, cfg.multi_label)
    val_x, val_y, val_names = read_split(data_root / "val", cfg.imgsz, cfg.multi_label)
    if val_names != class_names:
        raise DataError(f"{data_root / 'val'}: categories {val_names} differ from train's "
                        f"{class_names}")
    if len(train_x) < 2:  # BatchNorm cannot train on one image
        raise DataError(f"{data_root / 'train'}: {len(train_x)} image(s) to train a "
                        f"{cfg.task} model on, at least 2 needed (single-label trains on "
                        "images with exactly one label)")
    transform, gen = augment.pipeline(cfg.augment, "classify", cfg.seed), torch.Generator()
    gen.manual_seed(cfg.seed)
    # BatchNorm cannot train on a batch of one 1x1 feature map: never leave a last batch of one
    train_dl = DataLoader(ImageTargets(train_x, train_y, transform), cfg.batch, shuffle=True,
                          generator=gen, drop_last=len(train_x) % cfg.batch == 1 and
                          len(train_x) > 1)
    val_dl = DataLoader(ImageTargets(val_x, val_y), cfg.batch)
    model, report = initial_model(cfg, len(class_names))
    if report:
        report.write(out_dir)
    recipe = _recipe(cfg, model.to(device), train_dl, val_dl, gen, transform, device, class_names)
    fit(recipe, cfg, device, out_dir, on_epoch)
    CheckpointMeta(family=cfg.family, task=cfg.task, class_names=class_names,
                   config=cfg.model_dump(mode="json"), weights="best.pt").write(out_dir)
    return out_dir


@torch.inference_mode()
def predict_probabilities(model: nn.Module, paths: list[Path], imgsz: int, batch: int,
                          device: torch.device, multi_label: bool) -> list[np.ndarray]:
    """One float32 (K,) probability array per image (softmax, or sigmoids)."""
    model.to(device).eval()
    out: list[np.ndarray] = []
    for i in range(0, len(paths), batch):
        images = torch.from_numpy(np.stack([read_image(p, imgsz) for p in paths[i:i + batch]]))
        with torch.autocast(device.type, enabled=amp_enabled(device)):
            logits = model(to_input(images.permute(0, 3, 1, 2), device))
        out += list(_probabilities(logits, multi_label).cpu().numpy().astype(np.float32))
    return out


def network(checkpoint: Path) -> nn.Module:
    """The trained module (CPU, eval mode): what `load` predicts with, and what
    visiongate.explain looks inside."""
    checkpoint = Path(checkpoint)
    meta = CheckpointMeta.read(checkpoint)
    state = torch.load(meta.weights_path(checkpoint), map_location="cpu", weights_only=True)
    model = build_model(meta.family, len(meta.class_names))
    model.load_state_dict(state["state_dict"])
    return model.eval()


def load(checkpoint: Path, device: str = "auto"):
    """predict(image_paths) with the weights loaded once: per image a float32 (K,) array of
    class probabilities, index k-1 <-> category id k."""
    meta = CheckpointMeta.read(Path(checkpoint))
    model = network(checkpoint)
    config, dev, multi = meta.config, select_device(device), meta.task == "multilabel"
    return lambda image_paths: predict_probabilities(
        model, [Path(p) for p in image_paths], config["imgsz"], config["batch"], dev, multi)


def predict(checkpoint: Path, image_paths: list[Path], device: str = "auto") -> list[np.ndarray]:
    return load(checkpoint, device)(image_paths)
