"""Score a checkpoint on a split of the canonical dataset with the project's metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from visiongate import (bootstrap, diagnostics, evaluate_classify, metrics, models, plots, semantic,
                        split_map)
from visiongate.datasets import safe_load
from visiongate.datasets.coco import Split, load_split, read_semantic_mask
from visiongate.errors import DataError
from visiongate.robustness import corrupt_split

GALLERY_SIZE = 8


def evaluate(checkpoint: Path, split_dir: Path, plots_dir: Path | None = None,
             records_path: Path | None = None, runtime: str = "torch") -> dict[str, float]:
    """Predict every image of the split and compute the task's metrics.

    Detection (meta task "detect"): COCO box mAP (faster-coco-eval) plus precision and
    recall at the operating point (`score_threshold`). Instance segmentation ("instance"):
    the same plus mask metrics prefixed `mask_` (mask_map50, mask_ap/<class>, ...).
    Semantic segmentation ("segment"): mIoU, Dice, pixel accuracy. Classification
    ("classify", "multilabel"): visiongate.evaluate_classify. With `plots_dir`, also
    writes the report's PNGs there (PR curves, confusion matrix, worst images). With
    `records_path`, also saves the per-image records of the same predictions there
    (visiongate.bootstrap: what the gate resamples for its intervals). `runtime`: what
    predicts (visiongate.models.load; a deployment artifact's parity check).
    """
    meta = models.CheckpointMeta.read(checkpoint)
    split = load_split(Path(split_dir))
    model_classes = list(meta.class_names)
    if model_classes != list(split.class_names):
        raise DataError(f"{checkpoint} was trained on classes {model_classes}, "
                        f"but {split_dir} has {list(split.class_names)}: they cannot be compared")
    safe_load.check_images(split.image_path(im) for im in split.images)  # headers, pixel limit
    if meta.task in ("classify", "multilabel"):
        return evaluate_classify.evaluate_classification(checkpoint, split, meta, plots_dir,
                                                         records_path, runtime)
    predictions = models.predict(checkpoint, [split.image_path(im) for im in split.images],
                                 runtime)
    threshold = meta.config.get("score_threshold", 0.25)
    image_ids = [im["id"] for im in split.images]
    if meta.task not in ("detect", "instance"):
        if records_path is not None:
            targets = [read_semantic_mask(split, im) for im in split.images]
            bootstrap.semantic_records(predictions, targets, semantic.label_names(
                split.class_names), image_ids).save(Path(records_path))
        return _semantic(split, predictions, plots_dir)
    # post-processed by models.predict; matched once at the operating point
    matches = [diagnostics.match(diagnostics.gt_boxes(split.annotations[i]), p, threshold)
               for i, p in zip(image_ids, predictions)]
    if records_path is not None:
        bootstrap.detection_records(split.coco_dict(), image_ids, predictions, meta.task,
                                    threshold, matches=matches).save(Path(records_path))
    return _detection(split, predictions, meta.task, threshold, plots_dir, matches)


def _detection(split: Split, predictions: list[dict], task: str, threshold: float,
               plots_dir: Path | None, matches: list) -> dict[str, float]:
    gt, image_ids = split.coco_dict(), [im["id"] for im in split.images]
    scores = metrics.detection_metrics(gt, image_ids, predictions)
    if task == "instance":
        masks = metrics.detection_metrics(gt, image_ids, predictions, "segm")
        scores.update({f"mask_{k}": v for k, v in masks.items()})
    categories = sorted(split.categories, key=lambda c: c["id"])
    cm = diagnostics.confusion(matches, [c["id"] for c in categories])
    scores.update(diagnostics.precision_recall(cm, list(split.class_names)))
    if plots_dir is not None:
        recall, curves = metrics.pr_curves(gt, image_ids, predictions)
        plots.pr_curves(recall, curves, Path(plots_dir) / "pr_curves.png")
        plots.confusion(cm, semantic.label_names(split.class_names),
                        Path(plots_dir) / "confusion_matrix.png",
                        f"Detections at score ≥ {threshold:g}, IoU ≥ {diagnostics.MATCH_IOU}")
        worst = [k for k in diagnostics.worst([m.errors for m in matches], GALLERY_SIZE)
                 if matches[k].errors]
        split_map.write_outcomes(plots_dir, split_map.ImageOutcomes(
            [im["file_name"] for im in split.images],
            [_main_class(m.gt_labels, split) for m in matches],
            [split_map.detection_outcome(m) for m in matches],
            [split.images[k]["file_name"] for k in worst]))
        plots.detection_gallery([(split.image_path(split.images[k]), matches[k]) for k in worst],
                                {c["id"]: c["name"] for c in categories},
                                Path(plots_dir) / "worst_images.png")
    return scores


def _semantic(split: Split, predictions: list[np.ndarray], plots_dir: Path | None) -> dict[str, float]:
    names = semantic.label_names(split.class_names)  # label 0, then category id k
    targets = [read_semantic_mask(split, im) for im in split.images]
    scores = semantic.semantic_metrics(predictions, targets, names)
    if plots_dir is not None:
        cm = semantic.confusion_matrix(predictions, targets, len(names))
        plots.confusion(cm, names, Path(plots_dir) / "confusion_matrix.png", "Pixels")
        per_image = [semantic.semantic_metrics([p], [t], names)["miou"]
                     for p, t in zip(predictions, targets)]
        worst = diagnostics.worst(per_image, GALLERY_SIZE, highest=False)
        split_map.write_outcomes(plots_dir, split_map.ImageOutcomes(
            [im["file_name"] for im in split.images],
            [names[int(np.bincount(t[t > 0].ravel(), minlength=1).argmax())] if (t > 0).any()
             else names[0] for t in targets],
            [round(float(v), 4) for v in per_image],
            [split.images[k]["file_name"] for k in worst]))
        plots.semantic_gallery([(split.image_path(split.images[k]), targets[k], predictions[k],
                                 per_image[k]) for k in worst], len(names),
                               Path(plots_dir) / "worst_images.png")
    return scores


def _main_class(labels: np.ndarray, split: Split) -> str:
    """The image's most frequent object class ("none" without objects)."""
    if not len(labels):
        return "none"
    names = {c["id"]: c["name"] for c in split.categories}
    return names.get(int(np.bincount(labels).argmax()), "?")


def evaluate_corrupted(checkpoint: Path, split_dir: Path, cache_dir: Path,
                       corruptions: dict[str, int],
                       records_dir: Path | None = None) -> dict[str, dict[str, float]]:
    """Metrics on a corrupted copy of the split per corruption (copies cached in cache_dir);
    with `records_dir`, each corruption's per-image records as `<records_dir>/<name>.npz`."""
    out = {}
    for name, severity in corruptions.items():
        copy = corrupt_split(Path(split_dir), Path(cache_dir) / f"{name}-s{severity}", name, severity)
        records = Path(records_dir) / f"{name}.npz" if records_dir is not None else None
        out[name] = evaluate(checkpoint, copy, records_path=records)
    return out
