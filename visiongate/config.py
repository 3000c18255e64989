"""params.yaml -> frozen pydantic models. Each stage receives only its own section."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator


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
    def _known_corruptions(cls, v: dict[str, int]) -> dict[str, int]:
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


class DetectConfig(Frozen):
    enabled: bool = True
    family: Literal["yolo"] = "yolo"
    model: str = "yolov8n.yaml"
    weights: str | None = None
    epochs: int = Field(25, ge=1)
    imgsz: int = Field(128, ge=32)
    batch: int = Field(16, ge=1)
    lr: float = Field(0.002, gt=0)
    seed: int = 0
    device: str = "auto"
    conf: float = Field(0.001, ge=0, le=1)
    nms_iou: float = Field(0.7, gt=0, le=1)
    class_agnostic_nms: bool = False  # True: one NMS over all classes (overlapping classes suppress)
    ultralytics_args: dict[str, Any] = {}  # passed to ultralytics' train(); it checks the keys
    gate: GateConfig = GateConfig(floors={"map50": 0.5})


class SegmentConfig(Frozen):
    enabled: bool = True
    family: Literal["unet"] = "unet"
    base_channels: int = Field(16, ge=4)
    epochs: int = Field(30, ge=1)
    imgsz: int = Field(64, ge=32)
    batch: int = Field(8, ge=1)
    lr: float = Field(0.002, gt=0)
    seed: int = 0
    device: str = "auto"
    gate: GateConfig = GateConfig(floors={"miou": 0.5})


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

    def model_tasks(self) -> dict[str, DetectConfig | SegmentConfig]:
        """The enabled model tasks, in the order the flow trains them."""
        return {name: cfg for name, cfg in (("detect", self.detect), ("segment", self.segment))
                if cfg.enabled}


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no params file at {path.resolve()}")
    raw = yaml.safe_load(path.read_text()) or {}
    return Params.model_validate(raw)


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
