"""Training augmentation from params.yaml: a list of albumentations transforms per task.

    augment:
      - {name: HorizontalFlip, p: 0.5}
      - {name: RandomBrightnessContrast, brightness_limit: 0.2, p: 0.5}

The same list feeds every family: torchvision and U-Net datasets apply it jointly to the
image and its boxes (pascal_voc, dropped below a visibility share) or masks; ultralytics
receives the transform objects through its `augmentations=[...]` train argument.
"""

from __future__ import annotations

import difflib
import inspect
from functools import cache
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps
from torchvision.ops import masks_to_boxes
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks, make_grid

from visiongate.errors import ConfigError, DataError

# Smallest side (pixels) a box may keep after augmentation; thinner ones are dropped.
MIN_BOX_SIDE = 1.0


@cache
def transform_names() -> tuple[str, ...]:
    """Every concrete albumentations transform class name."""
    names = []
    for name in dir(A):
        cls = getattr(A, name)
        if (isinstance(cls, type) and issubclass(cls, A.BasicTransform) and not inspect.isabstract(cls)
                and cls.__module__.startswith("albumentations.augmentations")):
            names.append(name)
    return tuple(sorted(names))


def _build_one(index: int, step: Any) -> A.BasicTransform:
    where = f"augment[{index}]"
    if not isinstance(step, dict) or not isinstance(step.get("name"), str):
        raise ConfigError(f"{where}: each step is a mapping with a `name`, e.g. "
                          f"{{name: HorizontalFlip, p: 0.5}}; got {step!r}")
    name, kwargs = step["name"], {k: v for k, v in step.items() if k != "name"}
    if name not in transform_names():
        close = difflib.get_close_matches(name, transform_names(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"{where}: unknown albumentations transform {name!r}{hint}; "
                          f"choose from {', '.join(transform_names())}")
    cls = getattr(A, name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:  # albumentations only warns about these
        raise ConfigError(f"{where} {name}: unknown argument(s) {unknown}; "
                          f"{name} takes {sorted(accepted)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"{where} {name}: bad argument(s) {kwargs}: {err}") from None


def build_transforms(steps: list[dict[str, Any]]) -> list[A.BasicTransform]:
    """Transform objects for a params list; ConfigError naming the valid choices."""
    if not isinstance(steps, list):
        raise ConfigError(f"augment: expected a list of transforms, got {steps!r}")
    return [_build_one(i, step) for i, step in enumerate(steps)]


def pipeline(steps: list[dict[str, Any]], task: str, seed: int,
             min_visibility: float = 0.25) -> A.Compose:
    """A seeded Compose for a task: "detect" carries pascal_voc boxes + labels; "segment"
    (one label map, `mask=`) and "instance" (per-object masks, `masks=`; boxes are derived
    from the augmented masks, see `apply`) carry masks."""
    transforms = build_transforms(steps)
    if task == "detect" and transforms:
        bbox = A.BboxParams(format="pascal_voc", label_fields=["labels"],
                            min_visibility=min_visibility, clip=True)
        return A.Compose(transforms, bbox_params=bbox, seed=seed)
    return A.Compose(transforms, seed=seed)


def apply(compose: A.Compose, task: str, image: np.ndarray, boxes: np.ndarray | None = None,
          labels: np.ndarray | None = None, masks: np.ndarray | None = None,
          mask: np.ndarray | None = None) -> dict[str, Any]:
    """Augment one sample. Returns image and, per task, boxes/labels ((N,4) xyxy float32, (N,)
    int64, inside the image), masks ((N,H,W) uint8, instance) or mask ((H,W), semantic)."""
    if not compose.transforms:  # nothing to do (and no bbox processor to feed)
        given = {"image": image, "boxes": boxes, "labels": labels, "masks": masks, "mask": mask}
        return {k: v for k, v in given.items() if v is not None}
    if task == "segment":
        out = compose(image=image, mask=mask)
        return {"image": out["image"], "mask": out["mask"]}
    if task in ("classify", "multilabel"):  # image-level labels are unchanged by transforms
        return {"image": compose(image=image)["image"], "labels": labels}
    if task == "detect":
        out = compose(image=image, bboxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                      labels=np.asarray(labels, np.int64))
        boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        labels = np.asarray(out["labels"], np.int64).reshape(-1)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_SIDE) & ((boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_SIDE)
        return {"image": out["image"], "boxes": boxes[keep], "labels": labels[keep]}
    out = compose(image=image, masks=np.asarray(masks, np.uint8))
    new_masks = np.asarray(out["masks"], np.uint8).reshape(-1, *out["image"].shape[:2])
    keep = new_masks.reshape(len(new_masks), -1).sum(1) > 0  # objects moved out of view
    new_masks = new_masks[keep]
    boxes = masks_to_boxes(torch.from_numpy(new_masks)).numpy() if len(new_masks) else np.zeros((0, 4))
    boxes[:, 2:] += 1  # masks_to_boxes gives the last pixel; boxes end one past it
    return {"image": out["image"], "masks": new_masks, "boxes": boxes.astype(np.float32),
            "labels": np.asarray(labels, np.int64)[keep]}


def _draw(sample: dict[str, Any], task: str, class_names: list[str], tile: int) -> torch.Tensor:
    image = torch.from_numpy(np.array(sample["image"])).permute(2, 0, 1)  # a writable copy
    if task in ("classify", "multilabel"):
        padded = ImageOps.pad(Image.fromarray(np.array(sample["image"])), (tile, tile))
        caption = ", ".join(class_names[int(k) - 1] for k in sample["labels"]) or "(no label)"
        ImageDraw.Draw(padded).text((3, 3), caption, fill="yellow", stroke_width=1,
                                    stroke_fill="black")
        return torch.from_numpy(np.array(padded)).permute(2, 0, 1)
    if task == "segment":
        mask = torch.from_numpy(np.array(sample["mask"])).long()
        layers = torch.stack([mask == k for k in range(1, len(class_names) + 1)])
        image = draw_segmentation_masks(image, layers, alpha=0.45)
    else:
        if task == "instance" and len(sample["masks"]):
            image = draw_segmentation_masks(image, torch.from_numpy(np.array(sample["masks"])).bool(), alpha=0.45)
        names = [class_names[int(k) - 1] for k in sample["labels"]]
        image = draw_bounding_boxes(image, torch.from_numpy(sample["boxes"]), names, colors="yellow")
    padded = ImageOps.pad(Image.fromarray(image.permute(1, 2, 0).numpy()), (tile, tile))
    return torch.from_numpy(np.array(padded)).permute(2, 0, 1)


def preview_grid(cfg, split_dir: Path, out_png: Path, n: int = 16, tile: int = 192) -> Path:
    """A grid PNG of `n` augmented samples of a split, boxes and masks drawn on them.

    `cfg` is a DetectConfig, SegmentConfig or ClassifyConfig: its `augment` list, seed and
    task decide what is drawn (boxes; label-map overlay; instance masks + boxes; the
    image's class names)."""
    from visiongate.models.samples import load_samples

    task = cfg.task
    compose = pipeline(cfg.augment, task, cfg.seed, getattr(cfg, "augment_min_visibility", 0.25))
    samples, class_names = load_samples(Path(split_dir), task, limit=n)
    if not samples:
        raise DataError(f"{split_dir}: no images to preview")
    tiles = [_draw(apply(compose, task, **s), task, class_names, tile) for s in samples]
    grid = make_grid(torch.stack(tiles), nrow=int(np.ceil(np.sqrt(len(tiles)))), padding=4)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(out_png)
    return out_png
