"""torchvision detectors behind the visiongate model interface: Faster R-CNN, RetinaNet,
SSDlite (task "detect") and Mask R-CNN (task "instance").

Built from scratch (`weights=None, weights_backbone=None`: nothing is downloaded) or from a
local weights file (`weights:`): a whole model, or a backbone alone — e.g. a torchvision
`resnet50` / `mobilenet_v3_large` classification state dict (`backbone_renames`), read with
`weights_only=True` (visiongate.models.local_weights). SSDlite is built as torchvision builds
it without backbone weights, with MobileNetV3's last stage halved: an ImageNet
mobilenet_v3_large loads into all but that stage. Images are resized by the model to `imgsz`
(longest side), and the anchors are scaled by imgsz / 800 so they cover the same share of the
image as torchvision's defaults do at its usual 800 px. Training:
`visiongate.models.torch_loop`.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.models import detection, mobilenet_v3_large
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection import ssdlite
from torchvision.models.detection.backbone_utils import _mobilenet_extractor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from visiongate import augment
from visiongate.datasets.coco import load_split
from visiongate.devices import amp_enabled, select_device
from visiongate.errors import ConfigError
from visiongate.metrics import detection_metrics
from visiongate.models import OnEpoch
from visiongate.models.meta import CheckpointMeta
from visiongate.models.samples import category_ids, load_sample, read_rgb
from visiongate.models.local_weights import Rename, WeightsReport
from visiongate.models.torch_loop import Recipe, fit, load_local_weights, seed_everything

TASKS = {"fasterrcnn": "detect", "retinanet": "detect", "ssdlite": "detect", "maskrcnn": "instance"}
DETECTIONS_PER_IMAGE = 100


def _scaled(generator: AnchorGenerator, factor: float) -> AnchorGenerator:
    """The same anchors per location (the heads' shapes depend on it), sizes times factor."""
    sizes = tuple(tuple(max(2.0, s * factor) for s in level) for level in generator.sizes)
    return AnchorGenerator(sizes, generator.aspect_ratios)


def _rcnn(cfg, num_classes: int, masks: bool) -> nn.Module:
    kw = dict(weights=None, weights_backbone=None, num_classes=num_classes, min_size=cfg.imgsz,
              max_size=cfg.imgsz, box_score_thresh=cfg.conf, box_nms_thresh=cfg.nms_iou,
              box_detections_per_img=DETECTIONS_PER_IMAGE)
    if cfg.backbone == "resnet50_fpn":
        return (detection.maskrcnn_resnet50_fpn if masks else detection.fasterrcnn_resnet50_fpn)(**kw)
    if not masks:
        return detection.fasterrcnn_mobilenet_v3_large_fpn(**kw)
    # torchvision has no Mask R-CNN on MobileNetV3: build it as its Faster R-CNN builder does
    for key in ("weights", "weights_backbone"):
        kw.pop(key)
    backbone = _mobilenet_extractor(mobilenet_v3_large(weights=None), True, 6)
    anchors = AnchorGenerator(((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3)
    return detection.MaskRCNN(backbone, rpn_anchor_generator=anchors, rpn_score_thresh=0.05, **kw)


def _retinanet(cfg, num_classes: int) -> nn.Module:
    kw = dict(num_classes=num_classes, min_size=cfg.imgsz, max_size=cfg.imgsz,
              score_thresh=cfg.conf, nms_thresh=cfg.nms_iou, detections_per_img=DETECTIONS_PER_IMAGE)
    if cfg.backbone == "resnet50_fpn":
        return detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None, **kw)
    # MobileNetV3 + FPN with P6/P7 as torchvision's RetinaNet has them: 4 levels, 9 anchors each
    backbone = _mobilenet_extractor(mobilenet_v3_large(weights=None), True, 6,
                                    extra_blocks=LastLevelP6P7(256, 256))
    sizes = tuple((x, x * 2 ** (1 / 3), x * 2 ** (2 / 3)) for x in (32, 64, 128, 256))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    return detection.RetinaNet(backbone, anchor_generator=anchors, **kw)


def build_model(cfg, num_classes: int) -> nn.Module:
    """The untrained model of `cfg.family` for num_classes (background included)."""
    factor = cfg.imgsz / 800
    if cfg.family in ("fasterrcnn", "maskrcnn"):
        model = _rcnn(cfg, num_classes, cfg.family == "maskrcnn")
        model.rpn.anchor_generator = _scaled(model.rpn.anchor_generator, factor)
    elif cfg.family == "retinanet":
        model = _retinanet(cfg, num_classes)
        model.anchor_generator = _scaled(model.anchor_generator, factor)
    elif cfg.family == "ssdlite":
        model = detection.ssdlite320_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=num_classes, score_thresh=cfg.conf,
            nms_thresh=cfg.nms_iou, detections_per_img=DETECTIONS_PER_IMAGE)
        # its default boxes are relative to the input, so it runs at imgsz instead of 320
        model.transform = GeneralizedRCNNTransform(cfg.imgsz, cfg.imgsz, [0.5] * 3, [0.5] * 3,
                                                   size_divisible=1, fixed_size=(cfg.imgsz,) * 2)
    else:
        raise ConfigError(f"{cfg.family!r} is not a torchvision detection family; "
                          f"choose from {sorted(TASKS)}")
    return model


@cache
def _ssdlite_keys() -> tuple[dict[str, str], dict[str, str]]:
    """A mobilenet_v3_large classifier's keys -> SSDlite's (its extractor regroups the
    layers): as torchvision builds it, from a classifier whose tensors it shares. The second
    map: a `features` module saved on its own."""
    classifier = mobilenet_v3_large(weights=None)
    names = {id(t): k for k, t in classifier.state_dict(keep_vars=True).items()}
    extractor = ssdlite._mobilenet_extractor(classifier, 6, nn.BatchNorm2d)
    whole = {names[id(t)]: f"backbone.{k}" for k, t in
             extractor.state_dict(keep_vars=True).items() if id(t) in names}
    return whole, {k.removeprefix("features."): v for k, v in whole.items()}


def backbone_renames(cfg) -> tuple[Rename, ...]:
    """How a backbone saved on its own meets the model's names: a torchvision classifier's
    state dict (fc/classifier left out), its `features`, or the model's `backbone` module."""
    if cfg.family == "ssdlite":
        return (*_ssdlite_keys(), ("", "backbone."))
    if cfg.backbone == "resnet50_fpn":
        return ("", "backbone.body."), ("", "backbone.")
    return ("features.", "backbone.body."), ("", "backbone.body."), ("", "backbone.")


def initial_model(cfg, num_classes: int) -> tuple[nn.Module, WeightsReport | None]:
    """The model training starts from: built for num_classes (background included), then
    the `weights:` file loaded into it (checked against the weights rule) and its report."""
    model = build_model(cfg, num_classes)
    section = "detect" if TASKS.get(cfg.family) == "detect" else "segment"
    return model, load_local_weights(model, cfg.weights_file(), section, cfg.weights_sha256,
                                     backbone_renames(cfg))


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0  # a writable copy


class _DetectionSet(Dataset):
    """(image tensor, target dict) per image of a split, augmented jointly when asked."""

    def __init__(self, split_dir: Path, task: str, compose=None):
        self.split, self.task, self.compose = load_split(split_dir), task, compose
        self.images = sorted(self.split.images, key=lambda i: i["id"])
        self.ids = category_ids(self.split)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        sample = load_sample(self.split, self.images[i], self.task, self.ids)
        if self.compose is not None:
            sample = augment.apply(self.compose, self.task, **sample)
        target = {"boxes": torch.from_numpy(sample["boxes"]).reshape(-1, 4),
                  "labels": torch.from_numpy(sample["labels"])}
        if self.task == "instance":
            target["masks"] = torch.from_numpy(np.ascontiguousarray(sample["masks"]))
        return _tensor(sample["image"]), target


def _to_numpy(output: dict, ids: list[int]) -> dict[str, np.ndarray]:
    """A torchvision output (labels 1..K) in visiongate's terms (labels = category ids)."""
    labels = output["labels"].cpu().numpy().astype(np.int64)
    pred = {"boxes": output["boxes"].float().cpu().numpy().astype(np.float32),
            "scores": output["scores"].float().cpu().numpy().astype(np.float32),
            "labels": np.asarray(ids, np.int64)[labels - 1] if len(labels) else labels}
    if "masks" in output:  # (N,1,H,W) probabilities at the image's own size
        pred["masks"] = (output["masks"][:, 0] > 0.5).cpu().numpy()
    return pred


@torch.inference_mode()
def _predict_images(model, images: list[np.ndarray], batch: int, device, ids) -> list[dict]:
    model.eval()
    out = []
    for i in range(0, len(images), batch):
        with torch.autocast(device.type, enabled=amp_enabled(device)):
            outputs = model([_tensor(im).to(device) for im in images[i : i + batch]])
        out += [_to_numpy(o, ids) for o in outputs]
    return out


def _recipe(cfg, model, train_set: _DetectionSet, val_dir: Path, device, task: str) -> Recipe:
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(train_set, cfg.batch, shuffle=True, generator=gen, collate_fn=lambda b: b,
                        drop_last=len(train_set) > cfg.batch)  # BN needs > 1 value per channel
    val = load_split(val_dir)
    val_images = sorted(val.images, key=lambda i: i["id"])
    val_pixels = [read_rgb(val.image_path(im)) for im in val_images]

    def loss(model, batch):
        images = [image.to(device) for image, _ in batch]
        targets = [{k: v.to(device) for k, v in t.items()} for _, t in batch]
        parts = model(images, targets)
        return sum(parts.values()), {f"train_{k}": v.item() for k, v in parts.items()}

    def validate(model) -> dict[str, float]:
        preds = _predict_images(model, val_pixels, cfg.batch, device, train_set.ids)
        ids = [im["id"] for im in val_images]
        scores = detection_metrics(val.coco_dict(), ids, preds)
        out = {"val_map50": scores["map50"], "val_map50_95": scores["map50_95"]}
        if task == "instance":
            out["val_mask_map50"] = detection_metrics(val.coco_dict(), ids, preds, "segm")["map50"]
        return out

    def reseed(seed: int) -> None:
        gen.manual_seed(seed)
        train_set.compose.set_random_seed(seed)

    return Recipe(cfg.family, model, lambda: loader, len(loader), loss, validate, "val_map50",
                  reseed, {"class_names": list(train_set.split.class_names),
                           "category_ids": train_set.ids})  # model label i + 1 = ids[i]


def train(cfg, data_root: Path, out_dir: Path, on_epoch: OnEpoch) -> Path:
    """Train on <data_root>/train; keep the epoch with the best <data_root>/val mAP50."""
    task = TASKS.get(cfg.family)
    seed_everything(cfg.seed)
    device, out_dir = select_device(cfg.device), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    compose = augment.pipeline(cfg.augment, task, cfg.seed,
                               getattr(cfg, "augment_min_visibility", 0.25))
    train_set = _DetectionSet(Path(data_root) / "train", task, compose)
    model, report = initial_model(cfg, len(train_set.ids) + 1)
    if report:
        report.write(out_dir)
    recipe = _recipe(cfg, model.to(device), train_set, Path(data_root) / "val", device, task)
    fit(recipe, cfg, device, out_dir, on_epoch)
    CheckpointMeta(family=cfg.family, task=task, class_names=train_set.split.class_names,
                   config=cfg.model_dump(mode="json"), weights="best.pt").write(out_dir)
    return out_dir


def network(checkpoint: Path) -> tuple[nn.Module, object, list[int]]:
    """(the trained module in eval mode, its config, the category id of each label 1..K):
    what `load` predicts with, and what visiongate.explain looks inside."""
    from visiongate.config import DetectConfig, SegmentConfig

    checkpoint = Path(checkpoint)
    meta = CheckpointMeta.read(checkpoint)
    state = torch.load(meta.weights_path(checkpoint), map_location="cpu", weights_only=True)
    section = DetectConfig if meta.task == "detect" else SegmentConfig
    cfg = section.model_validate(state["config"])
    model = build_model(cfg, len(state["category_ids"]) + 1)
    model.load_state_dict(state["state_dict"])
    return model.eval(), cfg, list(state["category_ids"])


def load(checkpoint: Path, device: str = "auto"):
    """predict(image_paths) with the weights loaded once. Per image: boxes (N,4) xyxy
    pixels, scores (N,), labels (N,) category ids, and for Mask R-CNN masks (N,H,W) bool
    at the image's own size."""
    model, cfg, ids = network(checkpoint)
    dev = select_device(device)
    model.to(dev)

    def predict(image_paths: list[Path]) -> list[dict]:
        images = [read_rgb(Path(p)) for p in image_paths]
        return _predict_images(model, images, cfg.batch, dev, ids)

    return predict


def predict(checkpoint: Path, image_paths: list[Path], device: str = "auto") -> list[dict]:
    return load(checkpoint, device)(image_paths)
