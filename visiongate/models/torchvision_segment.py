"""torchvision semantic segmenters (FCN, DeepLabV3) behind the visiongate model interface.

Built from scratch (`weights=None, weights_backbone=None`: nothing is downloaded) or from a
local weights file: a whole model, or a backbone alone — e.g. a torchvision `resnet50` /
`mobilenet_v3_large` classification state dict (`backbone_renames`), read with
`weights_only=True` (visiongate.models.local_weights). Trained like the U-Net (same data,
augmentation, CE + Dice loss, loop and resume, `visiongate.models.unet` / `torch_loop`), the
auxiliary head (FCN) weighted 0.4.
Predictions: one (H,W) uint8 label map per image at the image's own size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models import segmentation

from visiongate.config import SegmentConfig
from visiongate.devices import select_device
from visiongate.errors import ConfigError
from visiongate.models import OnEpoch
from visiongate.models.meta import CheckpointMeta
from visiongate.models.local_weights import Rename, WeightsReport
from visiongate.models.torch_loop import fit, load_local_weights, seed_everything
from visiongate.models.unet import load_semantic_data, predict_label_maps, semantic_recipe

_BUILDERS = {
    ("fcn", "resnet50"): segmentation.fcn_resnet50,
    ("fcn", "resnet101"): segmentation.fcn_resnet101,
    ("deeplabv3", "mobilenet_v3_large"): segmentation.deeplabv3_mobilenet_v3_large,
    ("deeplabv3", "resnet50"): segmentation.deeplabv3_resnet50,
    ("deeplabv3", "resnet101"): segmentation.deeplabv3_resnet101,
}


def build_model(cfg: SegmentConfig, num_classes: int) -> nn.Module:
    """The untrained model for num_classes (background included); FCN with its aux head."""
    builder = _BUILDERS.get((cfg.family, cfg.backbone))
    if builder is None:
        raise ConfigError(f"no torchvision segmenter {cfg.family!r} with backbone "
                          f"{cfg.backbone!r}; choose from {sorted(_BUILDERS)}")
    return builder(weights=None, weights_backbone=None, num_classes=num_classes,
                   aux_loss=cfg.family == "fcn")


def backbone_renames(cfg: SegmentConfig) -> tuple[Rename, ...]:
    """How a backbone saved on its own meets the model's names: a torchvision classifier's
    state dict (its head left out), its `features` (MobileNetV3), or the model's `backbone`."""
    if cfg.backbone == "mobilenet_v3_large":
        return ("features.", "backbone."), ("", "backbone.")
    return (("", "backbone."),)


def initial_model(cfg: SegmentConfig, num_classes: int) -> tuple[nn.Module, WeightsReport | None]:
    """The model training starts from: built for num_classes (background included), then
    the `weights:` file loaded into it (checked against the weights rule) and its report."""
    model = build_model(cfg, num_classes)
    return model, load_local_weights(model, cfg.weights_file(), "segment", cfg.weights_sha256,
                                     backbone_renames(cfg))


def _logits(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    out = model(x)
    return [out["out"], *([out["aux"]] if "aux" in out else [])]


def train(cfg: SegmentConfig, data_root: Path, out_dir: Path, on_epoch: OnEpoch) -> Path:
    """Train on <data_root>/train; keep the epoch with the best <data_root>/val mIoU."""
    seed_everything(cfg.seed)
    device, out_dir = select_device(cfg.device), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # BatchNorm after global pooling (DeepLab's ASPP) needs batches of two or more
    data = load_semantic_data(cfg, Path(data_root), drop_last=True)
    model, report = initial_model(cfg, data.num_labels)
    if report:
        report.write(out_dir)
    recipe = semantic_recipe(cfg.family, cfg, data, model.to(device), device, _logits, {})
    fit(recipe, cfg, device, out_dir, on_epoch)
    CheckpointMeta(family=cfg.family, task="segment", class_names=data.class_names,
                   config=cfg.model_dump(mode="json"), weights="best.pt").write(out_dir)
    return out_dir


def network(checkpoint: Path) -> tuple[nn.Module, SegmentConfig]:
    """(the trained module in eval mode, its config): what `load` predicts with, and what
    visiongate.explain looks inside."""
    checkpoint = Path(checkpoint)
    weights = CheckpointMeta.read(checkpoint).weights_path(checkpoint)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    cfg = SegmentConfig.model_validate(state["config"])
    model = build_model(cfg, len(state["class_names"]) + 1)
    model.load_state_dict(state["state_dict"])
    return model.eval(), cfg


def load(checkpoint: Path, device: str = "auto"):
    """predict(image_paths) with the weights loaded once: one (H,W) uint8 label map per
    image, at the image's own size (0 = background, k = category id k)."""
    model, cfg = network(checkpoint)
    dev = select_device(device)
    return lambda image_paths: predict_label_maps(
        model, [Path(p) for p in image_paths], cfg.imgsz, cfg.batch, dev, _logits)


def predict(checkpoint: Path, image_paths: list[Path], device: str = "auto") -> list[np.ndarray]:
    return load(checkpoint, device)(image_paths)
