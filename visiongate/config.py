"""params.yaml -> frozen pydantic models. Each stage receives only its own section.

Loading imports only pydantic, yaml and visiongate's dependency-free vocabulary (never
torch, cv2 or albumentations); `check_deep` builds the augmentation pipelines later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from visiongate.errors import ConfigError, NotFound, describe
from visiongate.vocab import (DETECT_FAMILIES, SEGMENT_FAMILIES, check_corruption, check_cron,
                              check_device_spec, check_model_section, check_shape_names,
                              family_defaults)


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
        check_shape_names(v)
        return v


class RobustnessConfig(Frozen):
    """Gate on a corrupted copy of the test split: metric may drop at most this fraction."""

    corruptions: dict[str, int] = {}        # corruption name -> severity 1..3
    metric: str                             # e.g. "map50" (detect) or "miou" (segment)
    max_relative_drop: float = Field(0.3, ge=0)  # 0.3: corrupted >= 70 % of clean

    @field_validator("corruptions")
    @classmethod
    def _known_corruptions(cls, v: dict[str, int]) -> dict[str, int]:
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
    # Uncertainty (visiongate.gate_stats): a paired bootstrap over test images.
    confidence: float = Field(0.95, gt=0.5, lt=1)  # how sure the gate must be before refusing
    resamples: int = Field(1000, ge=100)            # bootstrap resamples of the test images
    seed: int = 0                                   # the resampling is reproducible
    floors_on: Literal["point", "lower"] = "point"  # floors on the estimate or its lower bound


# Joint flips/rotations: the shapes look the same any way up (the U-Net's augmentation).
FLIPS = ({"name": "HorizontalFlip", "p": 0.5}, {"name": "VerticalFlip", "p": 0.5},
         {"name": "RandomRotate90", "p": 0.5})


class _ModelConfig(Frozen):
    """Fields and checks shared by the detect and segment sections."""

    enabled: bool = True
    model: str | None = None       # ultralytics families: model yaml (None: family default)
    backbone: str | None = None    # torchvision families (None: family default)
    weights: str | None = None     # optional local weights file; nothing is ever downloaded
    # ultralytics families: trust `weights` (a pickle) beyond safe loading, only with this sha256
    weights_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    epochs: int = Field(25, ge=1)
    batch: int = Field(16, ge=1)
    lr: float = Field(0.002, gt=0)
    seed: int = 0
    device: str = "auto"           # auto | cpu | mps | cuda | cuda:N | N | N,M (ultralytics DDP)
    augment: list[dict[str, Any]] = []  # [{name: <albumentations transform>, **kwargs}, ...]
    ultralytics_args: dict[str, Any] = {}  # passed to ultralytics' train(); it checks the keys

    @field_validator("device")
    @classmethod
    def _valid_device(cls, v: str) -> str:
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
        return family_defaults(data, family, task)

    @property
    def ultralytics_family(self) -> bool:
        return self.family in ("yolo", "rtdetr")


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
        check_model_section("detect", self)
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
        check_model_section("segment", self)
        return self


class ValidationConfig(Frozen):
    """Dataset validation (import and every retrain)."""

    # Import/retrain fails when more than this share of a dataset's images is quarantined.
    max_quarantine_share: float = Field(0.2, ge=0, le=1)
    # A box outside the image by at most this fraction of the image side is clipped
    # (and reported as clipped); further out it is quarantined.
    clip_tolerance: float = Field(0.02, ge=0, le=0.5)
    # An image (or mask) with more pixels than this, by its header, is quarantined (too_large)
    # before decoding: 40 MP decodes to 120 MB RGB and ~0.5 GB as float32 copies.
    max_pixels: int = Field(40_000_000, ge=1)


class MlflowConfig(Frozen):
    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_root: str = "mlruns/artifacts"
    experiment: str = "visiongate"


class ServerConfig(Frozen):
    host: str = "127.0.0.1"   # loopback: anything wider is the user's explicit choice
    port: int = Field(ge=1, le=65535)


class StackConfig(Frozen):
    """`visiongate up`: where the Prefect and MLflow servers listen (visiongate.stack)."""

    prefect: ServerConfig = ServerConfig(port=4200)
    mlflow: ServerConfig = ServerConfig(port=5000)


class ServeConfig(Frozen):
    """REST limits of `visiongate serve --model` (visiongate.rest); rows and pixels also bind
    any server of the pyfunc model (VISIONGATE_SERVE_MAX_* in its environment)."""

    max_body_mb: float = Field(20, gt=0)               # larger request bodies: HTTP 413
    max_rows: int = Field(64, ge=1)                    # more images in one request: HTTP 413
    max_pixels: int = Field(40_000_000, ge=1)          # larger image (header size): row `too_large`


class ScheduleConfig(Frozen):
    """When `visiongate serve` runs each deployment (cron: minute hour day month weekday)."""

    retrain_cron: str = "0 2 * * *"        # nightly at 02:00
    evaluate_cron: str = "0 3 * * 0"       # champions re-scored weekly, Sunday 03:00
    timezone: str = "UTC"
    data_poll_minutes: float = Field(10, ge=0)  # DVC md5 check; a change starts a retrain; 0 = off

    @field_validator("retrain_cron", "evaluate_cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        return check_cron(value)


class Params(Frozen):
    dataset: str = "shapes"
    synth: SynthConfig = SynthConfig()
    detect: DetectConfig = DetectConfig()
    segment: SegmentConfig = SegmentConfig()
    validation: ValidationConfig = ValidationConfig()
    mlflow: MlflowConfig = MlflowConfig()
    stack: StackConfig = StackConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    serve: ServeConfig = ServeConfig()

    def model_tasks(self) -> dict[str, DetectConfig | SegmentConfig]:
        """The enabled model tasks, in the order the flow trains them."""
        return {name: cfg for name, cfg in (("detect", self.detect), ("segment", self.segment))
                if cfg.enabled}


def load_params(path: str | Path = "params.yaml", deep: bool = False) -> Params:
    """Validated params; a ConfigError (NotFound for a missing file) in one line naming the
    file and the bad field(s). Imports no torch: deep=True also runs `check_deep`, which
    builds the augmentation pipelines (albumentations: seconds); the flow does that itself
    once it knows it trains."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"no params file at {path.resolve()}")
    try:
        params = Params.model_validate(yaml.safe_load(path.read_text()) or {})
        return check_deep(params) if deep else params
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from err
    except ValidationError as err:
        raise ConfigError(f"{path}: {describe(err)}") from err
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def check_deep(params: Params) -> Params:
    """The checks loading skips: each model section's `augment:` list builds into
    albumentations transforms. ConfigError naming the section and step, e.g.
    "detect.augment[0]: unknown albumentations transform 'Flop' (did you mean Flip?)"."""
    from visiongate.augment import build_transforms  # albumentations, hence torch

    for section in ("detect", "segment"):
        try:
            build_transforms(getattr(params, section).augment)
        except ValueError as err:  # its messages start with "augment"
            raise ConfigError(f"{section}.{err}") from err
    return params

