"""Semantic segmentation metrics: pixel confusion matrix, per-class IoU, mIoU, Dice,
pixel accuracy, and the soft Dice that the U-Net's loss and the teaching texts use."""

from __future__ import annotations

import math

import numpy as np


def soft_dice(probs, target, eps: float = 0.0) -> float:
    """Soft Dice ``(2|P∩T| + eps) / (|P| + |T| + eps)`` with |P∩T| = sum(P * T).

    ``probs`` are probabilities (or a 0/1 mask), ``target`` a 0/1 mask of the same
    shape. Two empty masks agree perfectly: with eps = 0 the result is then 1.0.
    """
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"probs shape {p.shape} != target shape {t.shape}")
    denom = p.sum() + t.sum() + eps
    if denom == 0:
        return 1.0
    return float((2.0 * (p * t).sum() + eps) / denom)


def label_names(class_names) -> list[str]:
    """Names of a semantic label map's values: 0 (unlabelled pixels) then category id k ->
    ``class_names[k-1]``. Value 0 is "background" unless the dataset has a real class of
    that name; then "_background_" (more underscores until no class has the name)."""
    names = list(class_names)
    zero = "background"
    while zero in names:
        zero = f"_{zero}_"
    return [zero, *names]


def confusion_matrix(preds: list[np.ndarray], targets: list[np.ndarray],
                     num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) pixel counts, rows = target label, columns = predicted."""
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions but {len(targets)} targets")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for pred, target in zip(preds, targets):
        p = np.asarray(pred).astype(np.int64).ravel()
        t = np.asarray(target).astype(np.int64).ravel()
        if p.shape != t.shape:
            raise ValueError(f"prediction shape {np.shape(pred)} != target {np.shape(target)}")
        top = max(p.max(initial=0), t.max(initial=0))
        if top >= num_classes:
            raise ValueError(f"label {top} out of range for {num_classes} classes")
        cm += np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(
            num_classes, num_classes)
    return cm


def semantic_metrics(preds: list[np.ndarray], targets: list[np.ndarray],
                     class_names: list[str]) -> dict[str, float]:
    """Per-class IoU, mIoU, mean Dice and pixel accuracy over all pixels of all images.

    ``class_names[k]`` names label value k, value 0 included (``label_names``). One
    confusion matrix is accumulated over every pixel, then per class
    IoU = TP / (TP + FP + FN) and Dice = 2TP / (2TP + FP + FN).
    ``miou`` and ``dice`` average over the classes *present* — appearing in the
    targets or the predictions — background included; a class absent from both has
    ``iou/<name>`` NaN and does not count in the means. ``pixel_acc`` = correct / all.
    """
    cm = confusion_matrix(preds, targets, len(class_names))
    tp = np.diag(cm).astype(np.float64)
    in_target, in_pred = cm.sum(axis=1), cm.sum(axis=0)
    union = in_target + in_pred - tp
    present = union > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(present, tp / union, np.nan)
        dice = np.where(present, 2 * tp / (in_target + in_pred), np.nan)
    total = cm.sum()
    metrics = {f"iou/{name}": float(v) for name, v in zip(class_names, iou)}
    metrics["miou"] = float(iou[present].mean()) if present.any() else math.nan
    metrics["dice"] = float(dice[present].mean()) if present.any() else math.nan
    metrics["pixel_acc"] = float(tp.sum() / total) if total else math.nan
    return metrics
