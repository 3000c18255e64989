"""params.yaml -> frozen pydantic models. Each stage receives only its own section.

Loading imports only pydantic, yaml and visiongate's dependency-free vocabulary (never
torch, cv2 or albumentations); `check_deep` builds the augmentation pipelines later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from visiongate.config_models import (FLIPS, ClassifyConfig, DetectConfig,  # noqa: F401
                                      Frozen, GateConfig, RobustnessConfig, SegmentConfig)
from visiongate.errors import ConfigError, NotFound, describe
from visiongate.vocab import check_cron, check_shape_names


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
    # A box (after clipping) under this many pixels wide or high is a labelling slip, not an
    # object (a VOC point, xmin == xmax, is 1 px wide): quarantined as tiny_box. 0: off.
    min_box_px: float = Field(2.0, ge=0)


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
    # deployment artifacts (visiongate.export), made at registration for the families that
    # export (ultralytics); each must match PyTorch on the test split within parity_tolerance
    # openvino-bf16: the openvino IR computed in bf16, checked as its own artifact; skipped
    # on CPUs without bf16 (visiongate.runtimes)
    export: tuple[Literal["onnx", "openvino", "openvino-bf16"], ...] = (
        "onnx", "openvino", "openvino-bf16")
    parity_tolerance: float = Field(0.005, ge=0, le=1)  # |artifact - torch| per headline metric
    # auto: the fastest that passed
    runtime: Literal["auto", "torch", "onnx", "openvino", "openvino-bf16"] = "auto"


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


class InsightConfig(Frozen):
    """What every retrain run shows beside its numbers (none of it changes the model)."""

    heatmaps: bool = True     # heatmaps.png: the worst test images, candidate beside champion
    test_map: bool = True     # test_map.png + embeddings.npz: t-SNE of the test split
    suspects: bool = True     # suspects.csv: suspected label mistakes in train and val
    method: Literal["gradcam", "gradcam++", "layercam", "eigencam"] | None = None  # None: each family's


class Params(Frozen):
    dataset: str = "shapes"
    synth: SynthConfig = SynthConfig()
    detect: DetectConfig = DetectConfig()
    segment: SegmentConfig = SegmentConfig()
    classify: ClassifyConfig = ClassifyConfig()
    validation: ValidationConfig = ValidationConfig()
    mlflow: MlflowConfig = MlflowConfig()
    stack: StackConfig = StackConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    serve: ServeConfig = ServeConfig()
    insight: InsightConfig = InsightConfig()

    def model_tasks(self) -> dict[str, DetectConfig | SegmentConfig | ClassifyConfig]:
        """The enabled model tasks, in the order the flow trains them."""
        return {name: cfg for name, cfg in (("detect", self.detect), ("segment", self.segment),
                                            ("classify", self.classify)) if cfg.enabled}


def load_params(path: str | Path = "params.yaml", deep: bool = False,
                root: str | Path | None = None) -> Params:
    """Validated params; a ConfigError (NotFound for a missing file) in one line naming the
    file and the bad field(s). Imports no torch: deep=True also runs `check_deep`, which
    builds the augmentation pipelines (albumentations: seconds); the flow does that itself
    once it knows it trains. `root`: the project root (default: the file's folder), which
    relative `weights:` paths start from and whose weights folder they must resolve into
    (visiongate.weights_rule)."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"no params file at {path.resolve()}")
    root = Path(root if root is not None else path.parent).resolve()
    try:
        params = Params.model_validate(yaml.safe_load(path.read_text()) or {},
                                       context={"root": root})
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

    for section in ("detect", "segment", "classify"):
        try:
            build_transforms(getattr(params, section).augment)
        except ValueError as err:  # its messages start with "augment"
            raise ConfigError(f"{section}.{err}") from err
    return params

