"""The project's vocabulary: every name params.yaml is checked against, in one module that
imports only the standard library (and visiongate.errors, which does too).

config.py validates against it; the code that gives the names a meaning imports it from
here: visiongate.datasets.synth (shapes), visiongate.robustness (corruptions),
visiongate.metrics (COCO statistics), visiongate.devices (device specs), the models
(families). So loading params.yaml imports neither torch, cv2 nor albumentations.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from visiongate.errors import ConfigError

# Synthetic "shapes" classes: visiongate.datasets.synth draws one outline per name.
SHAPE_NAMES = ("circle", "square", "triangle", "ellipse", "star")

# Robustness corruptions: visiongate.robustness builds one albumentations pipeline per
# name and severity (1 = mild .. 3 = strong).
CORRUPTION_NAMES = ("low_light", "blur", "noise", "fog")
SEVERITIES = (1, 2, 3)

# Box/mask metrics that visiongate.metrics reports, in COCOeval.stats order (bbox or segm).
COCO_STAT_NAMES = (
    "map50_95", "map50", "map75", "map_small", "map_medium", "map_large",
    "mar1", "mar10", "mar100", "mar_small", "mar_medium", "mar_large",
)
# The metrics a run summary and a model listing show (those a task produces), in this order.
HEADLINE_METRICS = ("map50", "map50_95", "map75", "mask_map50", "mask_map50_95",
                    "precision", "recall", "miou", "dice", "pixel_acc",
                    "accuracy", "top5_accuracy", "f1_macro", "map", "f1_micro", "subset_accuracy")
# Classification metrics a gate may use (higher is better). The evaluator also reports
# `ece` (calibration) and, multi-label, `hamming_loss`: lower is better, report only.
CLASSIFY_METRICS = ("accuracy", "top5_accuracy", "balanced_accuracy", "f1_macro", "f1_weighted")
MULTILABEL_METRICS = ("map", "f1_micro", "f1_macro", "subset_accuracy")

# Model families.
DETECT_FAMILIES = ("yolo", "rtdetr", "fasterrcnn", "retinanet", "ssdlite")
# segment family -> what it predicts: "segment" (semantic label maps) or "instance" (masks)
SEGMENT_FAMILIES = {"unet": "segment", "fcn": "segment", "deeplabv3": "segment",
                    "yolo": "instance", "maskrcnn": "instance"}
# classify family -> ultralytics (yolo) or the torchvision architecture of that name.
CLASSIFY_FAMILIES = ("yolo", "resnet18", "mobilenet_v3_small", "efficientnet_b0")
# Ultralytics families: default model yaml. Torchvision families: backbones, default first.
ULTRALYTICS_MODELS = {"yolo": "yolov8n.yaml", "rtdetr": "rtdetr-l.yaml",
                      "yolo-seg": "yolov8n-seg.yaml", "yolo-cls": "yolov8n-cls.yaml"}
BACKBONES = {
    "fasterrcnn": ("mobilenet_v3_large_fpn", "resnet50_fpn"),
    "maskrcnn": ("mobilenet_v3_large_fpn", "resnet50_fpn"),
    "retinanet": ("mobilenet_v3_large_fpn", "resnet50_fpn"),
    "ssdlite": ("mobilenet_v3_large",),
    "fcn": ("resnet50", "resnet101"),
    "deeplabv3": ("mobilenet_v3_large", "resnet50", "resnet101"),
}

# Device specs (params.yaml `device:`); visiongate.devices resolves them with torch.
_DEVICE_SPEC = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?|\d+(,\d+)*)$")
DEVICE_CHOICES = "auto | cpu | mps | cuda | cuda:N | N | N,M,... (CUDA indices)"


def check_device_spec(spec: str) -> str:
    """The spec, stripped of spaces; ConfigError naming the choices when malformed."""
    cleaned = str(spec).replace(" ", "").lower()
    if not _DEVICE_SPEC.match(cleaned):
        raise ConfigError(f"device {spec!r} is not a device spec; choose from {DEVICE_CHOICES}")
    return cleaned


def check_cron(value: str) -> str:
    """A cron schedule (minute hour day month weekday); ConfigError unless five fields."""
    if len(value.split()) != 5:
        raise ConfigError(f"cron {value!r} needs five fields: minute hour day month weekday")
    return value


def check_shape_names(classes: tuple[str, ...]) -> None:
    """ConfigError naming the choices for an unknown synthetic shape class."""
    unknown = [c for c in classes if c not in SHAPE_NAMES]
    if unknown:
        raise ConfigError(f"unknown shape class(es) {unknown}; "
                          f"choose from {sorted(SHAPE_NAMES)}")


def check_corruption(name: str, severity: int) -> None:
    """ConfigError naming the choices for an unknown corruption or severity."""
    if name not in CORRUPTION_NAMES:
        raise ConfigError(f"unknown corruption {name!r}; choose from {sorted(CORRUPTION_NAMES)}")
    if severity not in SEVERITIES:
        raise ConfigError(f"corruption {name!r}: severity {severity} not in {list(SEVERITIES)}")


def gate_metrics(task: str) -> tuple[set[str], set[str]]:
    """(metric names, per-class prefixes) the evaluator produces for a task."""
    if task == "segment":
        return {"miou", "dice", "pixel_acc"}, {"iou"}
    if task == "classify":
        return set(CLASSIFY_METRICS), {"precision", "recall", "f1"}
    if task == "multilabel":
        return set(MULTILABEL_METRICS), {"ap", "precision", "recall", "f1"}
    # box metrics, and precision/recall at the operating point (score_threshold)
    names, prefixes = {*COCO_STAT_NAMES, "precision", "recall"}, {"ap", "precision", "recall"}
    if task == "instance":
        names |= {f"mask_{n}" for n in names}
        prefixes |= {"mask_ap"}
    return names, prefixes


def check_gate(section: str, family: str, task: str, gate: Any) -> None:
    """Every metric a gate (config.GateConfig) names must be one the family's evaluation
    produces."""
    names, prefixes = gate_metrics(task)
    used = [*gate.floors, *gate.max_drop] + ([gate.robustness.metric] if gate.robustness else [])
    for name in used:
        base = name.split("/", 1)[0] if "/" in name else name
        if name not in names and not ("/" in name and base in prefixes):
            raise ConfigError(f"{section}.gate: metric {name!r} is not produced by family "
                              f"{family!r} (task {task}); choose from {sorted(names)} or "
                              f"<prefix>/<class> with prefix in {sorted(prefixes)}")
    for prefix in gate.class_floors:
        if prefix not in prefixes:
            raise ConfigError(f"{section}.gate.class_floors: prefix {prefix!r} does not exist "
                              f"for family {family!r}; choose from {sorted(prefixes)}")


def family_defaults(data: dict, family: str, task: str | None) -> dict:
    """A model section's raw fields with `model` / `backbone` set to the family's default
    when not given."""
    key = {("yolo", "instance"): "yolo-seg", ("yolo", "classify"): "yolo-cls"}.get(
        (family, task), family)
    if key in ULTRALYTICS_MODELS and data.get("model") is None:
        data = {**data, "model": ULTRALYTICS_MODELS[key]}
    if family in BACKBONES and data.get("backbone") is None:
        data = {**data, "backbone": BACKBONES[family][0]}
    return data


def check_model_section(section: str, cfg: Any) -> None:
    """A model section (config.DetectConfig / SegmentConfig) whose weights pin, model yaml,
    backbone and gate fit its family; ConfigError naming the field otherwise."""
    if cfg.weights_sha256 and not cfg.weights:
        raise ConfigError(f"{section}.weights_sha256 pins a file, but {section}.weights is unset")
    if cfg.ultralytics_family:
        key = {"instance": "yolo-seg", "classify": "yolo-cls"}.get(cfg.task, cfg.family)
        name = Path(cfg.model).name
        if ("rtdetr" in name) != (cfg.family == "rtdetr") or \
                ("-seg" in name) != (cfg.task == "instance") or \
                ("-cls" in name) != (cfg.task == "classify"):
            raise ConfigError(f"{section}.model {cfg.model!r} does not fit family "
                              f"{cfg.family!r} ({cfg.task}); e.g. {ULTRALYTICS_MODELS[key]}")
    if cfg.family in BACKBONES and cfg.backbone not in BACKBONES[cfg.family]:
        raise ConfigError(f"{section}.backbone {cfg.backbone!r} is not available for family "
                          f"{cfg.family!r}; choose from {list(BACKBONES[cfg.family])}")
    check_gate(section, cfg.family, cfg.task, cfg.gate)
