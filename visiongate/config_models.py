"""The model sections of params.yaml (detect, segment, classify) and their gates, as frozen
pydantic models; visiongate.config assembles them into `Params`. Imports only pydantic and
visiongate's dependency-free vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator,
                      model_validator)

from visiongate.errors import ConfigError
from visiongate.vocab import (CLASSIFY_FAMILIES, DETECT_FAMILIES, SEGMENT_FAMILIES,
                              check_corruption, check_device_spec, check_model_section,
                              family_defaults)
from visiongate.weights_rule import allowed_weights


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")




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
    # optional local weights file to start from (nothing is ever downloaded): a whole model
    # or, torchvision families, a backbone alone. It must resolve inside the weights folder
    # (visiongate.weights_rule: <root>/weights or $VISIONGATE_WEIGHTS_DIR) unless pinned
    # below. An ultralytics .pt is a pickle: loading it can run code, so it goes through
    # ultralytics' safe loading only, unless its sha256 is pinned.
    weights: str | None = None
    # the sha256 of `weights`: a file outside the weights folder is accepted only with it,
    # and an ultralytics pickle that safe loading refuses is loaded in full only with it
    weights_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    epochs: int = Field(25, ge=1)
    batch: int = Field(16, ge=1)
    lr: float = Field(0.002, gt=0)
    seed: int = 0
    device: str = "auto"           # auto | cpu | mps | cuda | cuda:N | N | N,M (ultralytics DDP)
    # plain-torch families: data-parallel processes on this machine (models/distributed.py)
    nproc: int = Field(1, ge=1, le=64)
    augment: list[dict[str, Any]] = []  # [{name: <albumentations transform>, **kwargs}, ...]
    ultralytics_args: dict[str, Any] = {}  # passed to ultralytics' train(); it checks the keys

    SECTION: ClassVar[str] = ""    # the params.yaml section: detect, segment, classify
    _root: str | None = PrivateAttr(None)  # project root params.yaml was read from

    @field_validator("device")
    @classmethod
    def _valid_device(cls, v: str) -> str:
        return check_device_spec(v)

    @model_validator(mode="after")
    def _weights_where_allowed(self, info: ValidationInfo):
        """Read from params.yaml (load_params passes the project root as context): the
        weights rule is checked now and the root kept to resolve `weights` against."""
        root = (info.context or {}).get("root") if info is not None else None
        if root is not None:
            self._root = str(root)
            self.weights_file()
        return self

    def weights_file(self) -> Path | None:
        """`weights` as an absolute path, checked against the weights rule (ConfigError
        outside the weights folder without a pin); None when unset. Relative to the project
        root of params.yaml, or to the current directory for a config built in code."""
        return allowed_weights(self.SECTION, self.weights, self.weights_sha256, self._root,
                               self.ultralytics_family)

    @model_validator(mode="after")
    def _nproc_for_torch_families(self):
        if self.nproc > 1 and self.family in ("yolo", "rtdetr"):
            raise ValueError(f"nproc: {self.family} trains with ultralytics' own DDP: set "
                             "`device: 0,1` (CUDA only) and leave nproc at 1")
        return self

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
        known = (*DETECT_FAMILIES, *SEGMENT_FAMILIES, *CLASSIFY_FAMILIES)
        task = cls._task_of(family) if family in known else None
        return family_defaults(data, family, task)

    @property
    def ultralytics_family(self) -> bool:
        return self.family in ("yolo", "rtdetr")


class DetectConfig(_ModelConfig):
    SECTION: ClassVar[str] = "detect"
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
    SECTION: ClassVar[str] = "segment"
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


class ClassifyConfig(_ModelConfig):
    """Image classification: one class per image (softmax + cross-entropy) or, with
    `multi_label`, every class present (sigmoid + binary cross-entropy)."""

    SECTION: ClassVar[str] = "classify"
    enabled: bool = False
    family: Literal["yolo", "resnet18", "mobilenet_v3_small", "efficientnet_b0"] = "resnet18"
    multi_label: bool = False
    # image: each image is one item (its labels, or derived from its objects); crops: each
    # object of a detection/segmentation dataset is one item (visiongate.datasets.crops)
    view: Literal["image", "crops"] = "image"
    epochs: int = Field(20, ge=1)
    imgsz: int = Field(64, ge=32)
    batch: int = Field(32, ge=1)
    augment: list[dict[str, Any]] = [dict(step) for step in FLIPS]
    # single-label: the top-1 class is an image's label only at this probability or more
    # (below it the prediction is rejected as uncertain: no label)
    min_score: float = Field(0.5, ge=0, le=1)
    # multi-label: each class's threshold, chosen on the val split after training: the
    # best F1 (None) or the lowest threshold reaching this precision (best F1 if none does)
    target_precision: float | None = Field(None, gt=0, le=1)
    gate: GateConfig = GateConfig(floors={"accuracy": 0.5})

    @property
    def task(self) -> str:
        """"classify" (one label per image) or "multilabel"."""
        return "multilabel" if self.multi_label else "classify"

    @property
    def ultralytics_family(self) -> bool:
        return self.family == "yolo"

    @classmethod
    def _task_of(cls, family: str) -> str:
        return "classify"

    @model_validator(mode="before")
    @classmethod
    def _multilabel_gate_default(cls, data: Any) -> Any:
        """Multi-label models are gated on mAP by default, not accuracy."""
        if isinstance(data, dict) and "gate" not in data and data.get("multi_label"):
            data = {**data, "gate": {"floors": {"map": 0.5}}}
        return data

    @model_validator(mode="after")
    def _family_fields(self) -> "ClassifyConfig":
        if self.multi_label and self.family == "yolo":
            raise ConfigError("classify.family 'yolo' (ultralytics) is single-label only; "
                              "for multi_label choose resnet18, mobilenet_v3_small or "
                              "efficientnet_b0")
        if self.multi_label and self.view == "crops":
            raise ConfigError("classify.view 'crops' gives one object per item: single-label "
                              "only (multi_label: false, or view: image)")
        check_model_section("classify", self)
        return self
