"""What a model looked at: a heatmap per image for every family (pytorch-grad-cam), and the
pooled features of the same layer (the embeddings of the test-split map).

    family                               default    the heatmap explains
    ultralytics detect / segment         layercam   its detections: the class scores at or
    (yolo, rtdetr)                                  above the operating point, summed over
                                                    the raw outputs
    fasterrcnn, retinanet, ssdlite,      gradcam    the detections at the operating point
    maskrcnn                                        (box IoU + score: FasterRCNNBoxScoreTarget)
    unet, fcn, deeplabv3                 gradcam    the predicted region of the class that
                                                    covers most of the image
    classifiers                          gradcam    the top-1 class

Any method of METHODS may replace the default (params.yaml `insight.method`, `visiongate
explain --method`). LayerCAM for the ultralytics detectors because it keeps where the
gradient is, not only its channel average: on the demo's YOLOv8n its maximum falls on an
object in 64 of 64 test images, Grad-CAM's in 36 (benchmarks/bench_explain.py). A gradient
method whose map is flat (no positive evidence anywhere) falls back to EigenCAM, and says
so. A heatmap is at the image's own size, in [0, 1]. Layers: a classifier's deepest feature
map still at least `MIN_SIDE` cells on its short side (the last one is 1×1 on 32 px crops,
and a 1×1 map shows nothing); a detector's feature maps the head reads (all strides,
averaged); a U-Net's last decoder block; fcn / deeplabv3's backbone output.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, FasterRCNNBoxScoreTarget
from torch import nn

from visiongate.errors import ModelError
from visiongate.models import CLASSIFY_TASKS, CheckpointMeta, _family_module
from visiongate.models.samples import read_rgb

METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "layercam": LayerCAM,
           "eigencam": EigenCAM}
MIN_SIDE = 4
MAX_BOXES = 10  # detections a box-score target sums (the highest scores)
ULTRALYTICS_DETECT = ("yolo", "rtdetr")


@dataclass(frozen=True)
class Heatmap:
    cam: np.ndarray        # (H, W) float32 in [0, 1], the image's size
    embedding: np.ndarray  # (D,) float32: the layer's features averaged over space
    target: str            # what the heatmap explains, in words


@dataclass
class _Net:
    module: nn.Module                     # (1,3,h,w) -> what the targets read
    layers: list[nn.Module]
    prepare: Callable[[np.ndarray], tuple[torch.Tensor, tuple[int, int]]]  # rgb -> input, valid h,w
    target: Callable[[torch.Tensor], tuple[list, str]]   # input -> grad-cam targets, in words
    default: str = "gradcam"
    reshape: Callable | None = None


class _FirstOutput(nn.Module):
    """Ultralytics modules return (output, features) tuples in eval mode, nested for
    YOLO-seg: keep the output."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        while isinstance(out, (tuple, list)):  # YOLO-seg: ((output, protos), extras)
            out = out[0]
        return out


class _SegmentationOut(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _resized(imgsz: int, normalise: Callable[[torch.Tensor], torch.Tensor]):
    def prepare(rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        small = cv2.resize(rgb, (imgsz, imgsz), interpolation=cv2.INTER_LINEAR)
        return normalise(torch.from_numpy(small).permute(2, 0, 1)[None].contiguous()), (imgsz, imgsz)
    return prepare


def _letterboxed(imgsz: int, stride: int = 32):
    """As ultralytics predicts: the long side scaled to imgsz, padded (grey) to the stride."""
    def prepare(rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        h, w = rgb.shape[:2]
        r = imgsz / max(h, w)
        nh, nw = max(1, round(h * r)), max(1, round(w * r))
        ph, pw = -(-nh // stride) * stride, -(-nw // stride) * stride
        canvas = np.full((ph, pw, 3), 114, np.uint8)
        canvas[:nh, :nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
        return torch.from_numpy(canvas).permute(2, 0, 1)[None].contiguous().float() / 255.0, (nh, nw)
    return prepare


def _deepest_visible(model: nn.Module, candidates: list[nn.Module], x: torch.Tensor) -> nn.Module:
    """The deepest candidate whose output is at least MIN_SIDE cells on its short side."""
    sides: dict[int, int] = {}
    hooks = [m.register_forward_hook(lambda mod, i, out, k=k: sides.__setitem__(
        k, min(out.shape[-2:]) if isinstance(out, torch.Tensor) and out.dim() == 4 else 0))
        for k, m in enumerate(candidates)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    visible = [k for k, side in sides.items() if side >= MIN_SIDE]
    return candidates[max(visible)] if visible else candidates[min(sides, default=0)]


def _class_target(names: tuple[str, ...], to_probs: Callable, positions=None):
    def target(module: nn.Module, x: torch.Tensor) -> tuple[list, str]:
        with torch.no_grad():
            probs = to_probs(module(x)[0])
        k = int(probs.argmax())
        ours = int(positions[k]) if positions is not None else k
        return [ClassifierOutputTarget(k)], f"class {names[ours]} ({float(probs[k]):.2f})"
    return target


def _classifier(checkpoint: Path, meta: CheckpointMeta) -> _Net:
    module_of = _family_module(meta.family, meta.task)
    imgsz = meta.config["imgsz"]
    if meta.family == "yolo":
        from visiongate.models.yolo_classify import class_positions

        yolo = module_of.network(checkpoint)
        net = _FirstOutput(yolo.model).eval()
        positions = class_positions(yolo.names, len(meta.class_names),
                                    meta.weights_path(checkpoint))
        candidates, prepare = list(yolo.model.model[:-1]), _resized(imgsz, lambda t: t.float() / 255)
        target = _class_target(meta.class_names, lambda p: p, positions)  # already softmax
    else:
        from visiongate.models.classify import to_input

        net = module_of.network(checkpoint)
        candidates = [net.layer1, net.layer2, net.layer3, net.layer4] \
            if hasattr(net, "layer4") else list(net.features)
        prepare = _resized(imgsz, lambda t: to_input(t, torch.device("cpu")))
        target = _class_target(meta.class_names, (lambda z: z.sigmoid())
                               if meta.task == "multilabel" else (lambda z: z.softmax(0)))
    layer = _deepest_visible(net, candidates, prepare(np.zeros((imgsz, imgsz, 3), np.uint8))[0])
    return _Net(net, [layer], prepare, lambda x: target(net, x))


def _semantic(checkpoint: Path, meta: CheckpointMeta) -> _Net:
    from visiongate.models import unet

    module_of = _family_module(meta.family, meta.task)
    model, cfg = module_of.network(checkpoint)
    imgsz = cfg["imgsz"] if isinstance(cfg, dict) else cfg.imgsz
    if meta.family == "unet":
        net, layers = model, [model.fuse[0]]  # the last decoder block: full resolution
    else:
        # the backbone's last block (the backbone itself returns a dict, which grad-cam's
        # gradient hooks cannot follow)
        net, layers = _SegmentationOut(model).eval(), [list(model.backbone.children())[-1]]
    names = ("background", *meta.class_names)

    def target(x: torch.Tensor) -> tuple[list, str]:
        with torch.no_grad():
            labels = net(x)[0].argmax(0)
        counts = torch.bincount(labels.flatten(), minlength=len(names))
        counts[0] = 0
        k = int(counts.argmax())
        mask = (labels == k).float()
        return [lambda out, k=k, mask=mask: (out[k] * mask).sum()], \
            f"region of {names[k]}" if counts[k] else "no object predicted (background)"

    return _Net(net, layers, _resized(imgsz, lambda t: unet.to_input(t, torch.device("cpu"))),
                target)


def _torchvision_detector(checkpoint: Path, meta: CheckpointMeta) -> _Net:
    model, cfg, ids = _family_module(meta.family, meta.task).network(checkpoint)
    names = dict(zip(range(1, len(ids) + 1), meta.class_names))
    threshold = getattr(cfg, "score_threshold", 0.25)

    def prepare(rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].contiguous().float() / 255.0, rgb.shape[:2]

    def target(x: torch.Tensor) -> tuple[list, str]:
        with torch.no_grad():
            out = model(x)[0]
        keep = (out["scores"] >= threshold).nonzero().flatten()[:MAX_BOXES]
        if not len(keep):
            keep = out["scores"].argsort(descending=True)[:1]
        labels = out["labels"][keep].tolist()
        counts = Counter(names.get(k, str(k)) for k in labels)
        words = ", ".join(f"{n} {name}" for name, n in counts.most_common()) or "nothing"
        return [FasterRCNNBoxScoreTarget(labels, out["boxes"][keep].numpy())], f"detections: {words}"

    # the layers making each feature level (a backbone's output is a dict, which grad-cam's
    # gradient hooks cannot follow): the FPN's output convolutions, or SSD's blocks
    fpn = getattr(model.backbone, "fpn", None)
    layers = list(fpn.layer_blocks) if fpn is not None else \
        [model.backbone.features[-1], *model.backbone.extra]
    return _Net(model, layers, prepare, target)


def _ultralytics_detector(checkpoint: Path, meta: CheckpointMeta) -> _Net:
    yolo = _family_module(meta.family, meta.task).network(checkpoint)
    layers_ = yolo.model.model
    head = layers_[-1]
    layers = [layers_[i] for i in head.f] if isinstance(head.f, list) else [layers_[-2]]
    k, threshold = len(meta.class_names), meta.config.get("score_threshold", 0.25)
    rtdetr = meta.family == "rtdetr"

    def confident(out: torch.Tensor) -> torch.Tensor:
        """The sum of the class scores at or above the operating point, over the raw
        (pre-NMS) outputs: YOLO (4+K[+masks], anchors), RT-DETR (queries, 4+K)."""
        scores = (out[:, 4:4 + k] if rtdetr else out[4:4 + k].T).max(dim=1).values
        keep = scores >= threshold
        return scores[keep].sum() if keep.any() else scores.max()

    def target(x: torch.Tensor) -> tuple[list, str]:
        with torch.no_grad():
            scores = (net(x)[0][:, 4:4 + k] if rtdetr else net(x)[0][4:4 + k].T).max(dim=1)
        n = int((scores.values >= threshold).sum())
        return [confident], f"{n} raw box score{'s' * (n != 1)} ≥ {threshold:g} (before NMS)" \
            if n else "nothing detected: the best score"

    net = _FirstOutput(yolo.model).eval()
    return _Net(net, layers, _letterboxed(meta.config["imgsz"]), target, default="layercam")


def _net(checkpoint: Path, meta: CheckpointMeta) -> _Net:
    if meta.task in CLASSIFY_TASKS:
        return _classifier(checkpoint, meta)
    if meta.task == "segment":
        return _semantic(checkpoint, meta)
    if meta.family in ULTRALYTICS_DETECT:
        return _ultralytics_detector(checkpoint, meta)
    return _torchvision_detector(checkpoint, meta)


def explainer(checkpoint: Path, method: str | None = None) -> Callable[[Path], Heatmap]:
    """heatmap(image_path) for a checkpoint, the network loaded once (on the CPU: a few
    images, and gradients, which the serving device may not have room for)."""
    checkpoint = Path(checkpoint)
    meta = CheckpointMeta.read(checkpoint)
    net = _net(checkpoint, meta)
    method = method or net.default
    if method not in METHODS:
        raise ModelError(f"unknown heatmap method {method!r}; choose from {sorted(METHODS)}")
    for p in net.module.parameters():
        p.requires_grad_(True)  # ultralytics freezes some; gradients must reach the layers
    cam = METHODS[method](model=net.module, target_layers=net.layers,
                          reshape_transform=net.reshape)
    fallback = EigenCAM(model=net.module, target_layers=net.layers,
                        reshape_transform=net.reshape) if method != "eigencam" else None

    def heatmap(image: Path) -> Heatmap:
        rgb = read_rgb(Path(image))
        x, (vh, vw) = net.prepare(rgb)
        targets, words = net.target(x)
        with torch.enable_grad():
            grey = cam(input_tensor=x, targets=targets)[0]
        acts, used = cam.activations_and_grads.activations, method
        if fallback is not None and not np.ptp(grey[:vh, :vw]) > 0:
            # the gradient found no positive evidence (ReLU of the weighted features is 0
            # everywhere): a flat map says nothing, so show the features' main component
            grey, used = fallback(input_tensor=x, targets=targets)[0], f"{method} flat → eigencam"
            acts = fallback.activations_and_grads.activations
        embedding = np.concatenate([a.float().mean(dim=(-2, -1))[0].numpy() for a in acts])
        full = cv2.resize(np.ascontiguousarray(grey[:vh, :vw]), (rgb.shape[1], rgb.shape[0]),
                          interpolation=cv2.INTER_LINEAR)
        full = np.nan_to_num(full, nan=0.0, posinf=0.0, neginf=0.0)
        span = full.max() - full.min()
        full = (full - full.min()) / span if span > 0 else np.zeros_like(full)
        return Heatmap(full.astype(np.float32), embedding.astype(np.float32),
                       f"{used}: {words}")

    return heatmap


def overlay(rgb: np.ndarray, cam: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """The heatmap (jet colours) blended over the image, uint8 RGB."""
    colours = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * cam), cv2.COLORMAP_JET),
                           cv2.COLOR_BGR2RGB)
    return np.uint8(weight * rgb.astype(np.float32) + (1 - weight) * colours)
