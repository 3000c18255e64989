"""Score a checkpoint on a split of the canonical dataset with the project's metrics."""

from __future__ import annotations

from pathlib import Path

from visiongate import metrics, models
from visiongate.datasets.coco import load_split, read_semantic_mask
from visiongate.robustness import corrupt_split


def evaluate(checkpoint: Path, split_dir: Path) -> dict[str, float]:
    """Predict every image of the split and compute the task's metrics.

    Detection (meta task "detect"): COCO box mAP (faster-coco-eval). Instance segmentation
    ("instance"): box metrics as for detection plus mask metrics prefixed `mask_`
    (mask_map50, mask_ap/<class>, ...). Semantic segmentation ("segment"): mIoU, Dice,
    pixel accuracy.
    """
    meta = models.read_meta(checkpoint)
    split = load_split(Path(split_dir))
    model_classes = [c for c in meta["class_names"] if c != "background"]
    if model_classes != list(split.class_names):
        raise ValueError(f"{checkpoint} was trained on classes {model_classes}, "
                         f"but {split_dir} has {list(split.class_names)}: they cannot be compared")
    predictions = models.predict(checkpoint, [split.image_path(im) for im in split.images])
    image_ids = [im["id"] for im in split.images]
    if meta["task"] == "detect":
        return metrics.detection_metrics(split.coco_dict(), image_ids, predictions)
    if meta["task"] == "instance":
        masks = metrics.detection_metrics(split.coco_dict(), image_ids, predictions, "segm")
        return {**metrics.detection_metrics(split.coco_dict(), image_ids, predictions),
                **{f"mask_{k}": v for k, v in masks.items()}}
    targets = [read_semantic_mask(split, im) for im in split.images]
    return metrics.semantic_metrics(predictions, targets, ["background", *split.class_names])


def evaluate_corrupted(checkpoint: Path, split_dir: Path, cache_dir: Path,
                       corruptions: dict[str, int]) -> dict[str, dict[str, float]]:
    """Metrics on a corrupted copy of the split per corruption (copies cached in cache_dir)."""
    out = {}
    for name, severity in corruptions.items():
        copy = corrupt_split(Path(split_dir), Path(cache_dir) / f"{name}-s{severity}", name, severity)
        out[name] = evaluate(checkpoint, copy)
    return out
