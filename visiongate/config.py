"""params.yaml -> frozen pydantic models. Each stage receives only its own section."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationInfo, field_validator,
                      model_validator)

from visiongate.gate_metrics import check_gate as _check_gate
from visiongate.stack import ScheduleConfig, StackConfig


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SynthConfig(Frozen):
    seed: int = 0
    image_size: int = Field(128, ge=32)
    splits: dict[Literal["train", "val", "test"], int] = {"train": 256, "val": 64, "test": 64}
    classes: tuple[str, ...] = ("circle", "square", "triangle")
    objects_per_image: tuple[int, int] = (1, 4)
    object_size: tuple[float, float] = (0.12, 0.5)

    @field_validator("classes")
    @classmethod
    def _known_shapes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from visiongate.datasets.synth import SHAPES

        unknown = [c for c in v if c not in SHAPES]
        if unknown:
            raise ValueError(f"unknown shape class(es) {unknown}; choose from {sorted(SHAPES)}")
        return v


class RobustnessConfig(Frozen):
    """Gate on a corrupted copy of the test split: metric may drop at most this fraction."""

    corruptions: dict[str, int] = {}        # corruption name -> severity 1..3
    metric: str                             # e.g. "map50" (detect) or "miou" (segment)
    max_relative_drop: float = Field(0.3, ge=0)  # 0.3: corrupted >= 70 % of clean

    @field_validator("corruptions")
    @classmethod
    def _known_corruptions(cls, v: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        if not _deep(info):
            return v
        from visiongate.robustness import check_corruption

        for name, severity in v.items():
            check_corruption(name, severity)
        return v


class GateConfig(Frozen):
    floors: dict[str, float] = {}
    max_drop: dict[str, float] = {}
    # Per-class floors by metric prefix: {"ap": 0.3} -> every "ap/<class>" >= 0.3.
    class_floors: dict[str, float] = {}
    robustness: RobustnessConfig | None = None
    # Data quality: refuse promotion when validation quarantined more than this share of
    # the dataset's images (None: no such check). The hard import bound is validation's.
    max_quarantine_share: float | None = Field(None, ge=0, le=1)


DETECT_FAMILIES = ("yolo", "rtdetr", "fasterrcnn", "retinanet", "ssdlite")
# segment family -> what it predicts: "segment" (semantic label maps) or "instance" (masks)
SEGMENT_FAMILIES = {"unet": "segment", "fcn": "segment", "deeplabv3": "segment",
                    "yolo": "instance", "maskrcnn": "instance"}
# Ultralytics families: default model yaml. Torchvision families: backbones, default first.
ULTRALYTICS_MODELS = {"yolo": "yolov8n.yaml", "rtdetr": "rtdetr-l.yaml", "yolo-seg": "yolov8n-seg.yaml"}
BACKBONES = {
    "fasterrcnn": ("mobilenet_v3_large_fpn", "resnet50_fpn"),
    "maskrcnn": ("mobilenet_v3_large_fpn", "resnet50_fpn"),
    "retinanet": ("mobilenet_v3_large_fpn", "resnet50_fpn"),
    "ssdlite": ("mobilenet_v3_large",),
    "fcn": ("resnet50", "resnet101"),
    "deeplabv3": ("mobilenet_v3_large", "resnet50", "resnet101"),
}
# Joint flips/rotations: the shapes look the same any way up (the U-Net's augmentation).
FLIPS = ({"name": "HorizontalFlip", "p": 0.5}, {"name": "VerticalFlip", "p": 0.5},
         {"name": "RandomRotate90", "p": 0.5})


class _ModelConfig(Frozen):
    """Fields and checks shared by the detect and segment sections."""

    enabled: bool = True
    model: str | None = None       # ultralytics families: model yaml (None: family default)
    backbone: str | None = None    # torchvision families (None: family default)
    weights: str | None = None     # optional local weights file; nothing is ever downloaded
    epochs: int = Field(25, ge=1)
    batch: int = Field(16, ge=1)
    lr: float = Field(0.002, gt=0)
    seed: int = 0
    device: str = "auto"           # auto | cpu | mps | cuda | cuda:N | N | N,M (ultralytics DDP)
    augment: list[dict[str, Any]] = []  # [{name: <albumentations transform>, **kwargs}, ...]
    ultralytics_args: dict[str, Any] = {}  # passed to ultralytics' train(); it checks the keys

    @field_validator("augment")
    @classmethod
    def _valid_augment(cls, v: list[dict[str, Any]], info: ValidationInfo) -> list[dict[str, Any]]:
        if not _deep(info):
            return v
        from visiongate.augment import build_transforms

        build_transforms(v)  # ValueError naming the valid transforms / the bad argument
        return v

    @field_validator("device")
    @classmethod
    def _valid_device(cls, v: str) -> str:
        from visiongate.devices import check_device_spec

        return check_device_spec(v)

    @classmethod
    def _task_of(cls, family: str) -> str:
        raise NotImplementedError

    @model_validator(mode="before")
    @classmethod
    def _family_defaults(cls, data: Any) -> Any:
        """Fill `model` / `backbone` with the family's default when not given."""
        if not isinstance(data, dict):
            return data
        family = data.get("family", cls.model_fields["family"].default)
        task = cls._task_of(family) if family in (*DETECT_FAMILIES, *SEGMENT_FAMILIES) else None
        key = "yolo-seg" if (family, task) == ("yolo", "instance") else family
        if key in ULTRALYTICS_MODELS and data.get("model") is None:
            data = {**data, "model": ULTRALYTICS_MODELS[key]}
        if family in BACKBONES and data.get("backbone") is None:
            data = {**data, "backbone": BACKBONES[family][0]}
        return data

    @property
    def ultralytics_family(self) -> bool:
        return self.family in ("yolo", "rtdetr")

    def _check_family_fields(self, section: str) -> None:
        if self.ultralytics_family:
            key = "yolo-seg" if self.task == "instance" else self.family
            name = Path(self.model).name
            if ("rtdetr" in name) != (self.family == "rtdetr") or \
                    ("-seg" in name) != (self.task == "instance"):
                raise ValueError(f"{section}.model {self.model!r} does not fit family "
                                 f"{self.family!r} ({self.task}); e.g. {ULTRALYTICS_MODELS[key]}")
        if self.family in BACKBONES and self.backbone not in BACKBONES[self.family]:
            raise ValueError(f"{section}.backbone {self.backbone!r} is not available for family "
                             f"{self.family!r}; choose from {list(BACKBONES[self.family])}")
        _check_gate(section, self.family, self.task, self.gate)


class DetectConfig(_ModelConfig):
    family: Literal["yolo", "rtdetr", "fasterrcnn", "retinanet", "ssdlite"] = "yolo"
    imgsz: int = Field(128, ge=32)
    conf: float = Field(0.001, ge=0, le=1)
    nms_iou: float = Field(0.7, gt=0, le=1)
    class_agnostic_nms: bool = False  # True: one NMS over all classes (overlapping classes suppress)
    score_threshold: float = Field(0.25, ge=0, le=1)  # operating point: precision, recall, confusion
    # torchvision families: a box keeps after augmentation only if this share stays visible
    augment_min_visibility: float = Field(0.25, ge=0, le=1)
    gate: GateConfig = GateConfig(floors={"map50": 0.5})

    @property
    def task(self) -> str:
        return "detect"

    @classmethod
    def _task_of(cls, family: str) -> str:
        return "detect"

    @model_validator(mode="after")
    def _family_fields(self) -> "DetectConfig":
        self._check_family_fields("detect")
        return self


class SegmentConfig(_ModelConfig):
    family: Literal["unet", "fcn", "deeplabv3", "yolo", "maskrcnn"] = "unet"
    base_channels: int = Field(16, ge=4)   # unet only
    epochs: int = Field(30, ge=1)
    imgsz: int = Field(64, ge=32)
    batch: int = Field(8, ge=1)
    augment: list[dict[str, Any]] = [dict(step) for step in FLIPS]
    conf: float = Field(0.001, ge=0, le=1)       # instance families: evaluation threshold
    nms_iou: float = Field(0.7, gt=0, le=1)      # instance families
    class_agnostic_nms: bool = False             # instance families
    score_threshold: float = Field(0.25, ge=0, le=1)  # instance families: operating point
    gate: GateConfig = GateConfig(floors={"miou": 0.5})

    @property
    def task(self) -> str:
        """"segment" (semantic label maps) or "instance" (per-object masks)."""
        return SEGMENT_FAMILIES[self.family]

    @classmethod
    def _task_of(cls, family: str) -> str:
        return SEGMENT_FAMILIES[family]

    @model_validator(mode="before")
    @classmethod
    def _instance_gate_default(cls, data: Any) -> Any:
        """Instance families score masks: their default floor is mask_map50, not miou."""
        if isinstance(data, dict) and "gate" not in data and \
                SEGMENT_FAMILIES.get(data.get("family", "unet")) == "instance":
            data = {**data, "gate": {"floors": {"mask_map50": 0.5}}}
        return data

    @model_validator(mode="after")
    def _family_fields(self) -> "SegmentConfig":
        self._check_family_fields("segment")
        return self


class ValidationConfig(Frozen):
    """Dataset validation (import and every retrain)."""

    # Import/retrain fails when more than this share of a dataset's images is quarantined.
    max_quarantine_share: float = Field(0.2, ge=0, le=1)
    # A box outside the image by at most this fraction of the image side is clipped
    # (and reported as clipped); further out it is quarantined.
    clip_tolerance: float = Field(0.02, ge=0, le=0.5)


class MlflowConfig(Frozen):
    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_root: str = "mlruns/artifacts"
    experiment: str = "visiongate"


class Params(Frozen):
    dataset: str = "shapes"
    synth: SynthConfig = SynthConfig()
    detect: DetectConfig = DetectConfig()
    segment: SegmentConfig = SegmentConfig()
    validation: ValidationConfig = ValidationConfig()
    mlflow: MlflowConfig = MlflowConfig()
    stack: StackConfig = StackConfig()
    schedule: ScheduleConfig = ScheduleConfig()

    def model_tasks(self) -> dict[str, DetectConfig | SegmentConfig]:
        """The enabled model tasks, in the order the flow trains them."""
        return {name: cfg for name, cfg in (("detect", self.detect), ("segment", self.segment))
                if cfg.enabled}


def load_params(path: str | Path = "params.yaml", deep: bool = True) -> Params:
    """Validated params. deep=False skips building the augmentation and corruption
    pipelines (albumentations imports torch: seconds), e.g. to decide that nothing changed;
    `check_deep` does it later."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no params file at {path.resolve()}")
    raw = yaml.safe_load(path.read_text()) or {}
    return Params.model_validate(raw, context={"deep": deep})


def check_deep(params: Params) -> Params:
    """The checks load_params(deep=False) skipped."""
    return Params.model_validate(params.model_dump(), context={"deep": True})


def _deep(info: ValidationInfo) -> bool:
    return (info.context or {}).get("deep", True)


def flatten(section: BaseModel, prefix: str = "") -> dict[str, str]:
    """Flat {dotted.key: str(value)} view of a config section, for MLflow params."""
    out: dict[str, str] = {}
    for key, value in section.model_dump(mode="json").items():
        _flatten_into(out, f"{prefix}{key}", value)
    return out


def _flatten_into(out: dict[str, str], key: str, value: object) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten_into(out, f"{key}.{k}", v)
    else:
        out[key] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def params_hash(section: BaseModel) -> str:
    """Stable short hash of a config section (lineage tag, cache key)."""
    blob = json.dumps(section.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
