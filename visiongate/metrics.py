"""Evaluation metrics: plain IoU / NMS / Dice, COCO box mAP, semantic mIoU and Dice.

Pure functions over numpy arrays and dicts; no files are read or written.

Prediction contract shared with the model code:
- detection: one dict per image, ``{"boxes": (N, 4) float xyxy pixels, "scores": (N,),
  "labels": (N,) int COCO category ids}``;
- semantic: one (H, W) uint8 label map per image (0 = background, k = category id).

Undefined values are NaN, never COCO's -1: a metric over objects that do not exist in
the evaluated split (e.g. ``map_large`` with no large objects, ``ap/<class>`` for a
class absent from the ground truth) is NaN, and the key is still present so the metric
set is the same on every run. A gate treats NaN as a failure (see gates.py).
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision import ops

# Order of COCOeval.stats for iouType bbox / segm (see COCOeval.summarize).
COCO_STAT_NAMES = (
    "map50_95", "map50", "map75", "map_small", "map_medium", "map_large",
    "mar1", "mar10", "mar100", "mar_small", "mar_medium", "mar_large",
)


def _boxes_tensor(boxes) -> torch.Tensor:
    return torch.as_tensor(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))


def box_iou(a, b) -> float:
    """IoU of two xyxy boxes, via torchvision.ops.box_iou."""
    return float(ops.box_iou(_boxes_tensor(a), _boxes_tensor(b))[0, 0])


def nms(boxes, scores, iou_threshold: float, labels=None) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, highest score first.

    A box is dropped when its IoU with a kept, higher-scoring box is > iou_threshold.
    With ``labels`` boxes only suppress boxes of the same label (torchvision
    batched_nms); without, suppression is class-agnostic (torchvision nms).
    """
    b = _boxes_tensor(boxes)
    s = torch.as_tensor(np.asarray(scores, dtype=np.float64).reshape(-1))
    if labels is None:
        keep = ops.nms(b, s, iou_threshold)
    else:
        idx = torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1))
        keep = ops.batched_nms(b, s, idx, iou_threshold)
    return keep.numpy().astype(np.int64)


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


def _coco_gt(gt: dict) -> COCO:
    """A pycocotools COCO index over a copy of ``gt`` with the fields COCOeval needs.

    Annotation ids are renumbered 1..N because COCOeval treats id 0 as "unmatched";
    missing ``area`` (box area) and ``iscrowd`` (0) are filled in.
    """
    anns = []
    for i, ann in enumerate(gt.get("annotations", []), start=1):
        ann = dict(ann, id=i)
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
        anns.append(ann)
    coco = COCO()
    coco.dataset = {"images": list(gt["images"]), "categories": list(gt["categories"]),
                    "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _to_coco_results(image_ids: list[int], predictions: list[dict]) -> list[dict]:
    """Detection predictions (xyxy) -> COCO result dicts (xywh)."""
    results = []
    for image_id, pred in zip(image_ids, predictions, strict=True):
        boxes = np.asarray(pred["boxes"], dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(pred["scores"], dtype=np.float64).reshape(-1)
        labels = np.asarray(pred["labels"]).reshape(-1)
        for (x1, y1, x2, y2), score, label in zip(boxes, scores, labels, strict=True):
            results.append({"image_id": int(image_id), "category_id": int(label),
                            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                            "score": float(score)})
    return results


def _coco_dt(coco_gt: COCO, results: list[dict]) -> COCO:
    """Results index; an empty one by hand because COCO.loadRes cannot take []."""
    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            return coco_gt.loadRes(results)
        coco = COCO()
        coco.dataset = {"images": list(coco_gt.dataset["images"]),
                        "categories": list(coco_gt.dataset["categories"]), "annotations": []}
        coco.createIndex()
    return coco


def _nan_if_undefined(value: float) -> float:
    """COCO reports -1 for "no such objects"; we report NaN."""
    return float("nan") if value < 0 else float(value)


def _per_class_ap(evaluator: COCOeval, coco_gt: COCO) -> dict[str, float]:
    """AP@[.5:.95] per category from COCOeval's accumulated precision table.

    precision has shape [iou thresholds, recall points, categories, area ranges, max
    dets]; like COCOeval.summarize, average the defined (> -1) entries for area "all"
    and the largest max-dets.
    """
    precision = evaluator.eval["precision"]
    out = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        name = coco_gt.cats[cat_id]["name"]
        out[f"ap/{name}"] = float(p.mean()) if p.size else float("nan")
    return out


def detection_metrics(gt: dict, image_ids: list[int], predictions: list[dict],
                      iou_type: str = "bbox") -> dict[str, float]:
    """COCO mAP / mAR of ``predictions`` against the COCO dict ``gt``, via pycocotools.

    ``predictions[i]`` belongs to ``image_ids[i]``; only those images are evaluated.
    Returns ``map50_95, map50, map75, map_small, map_medium, map_large, mar1, mar10,
    mar100, mar_small, mar_medium, mar_large`` and ``ap/<category name>`` (AP@[.5:.95])
    for every category in ``gt``. Values COCO marks undefined (-1: no ground-truth
    objects of that kind) are NaN. No predictions at all give 0.0 wherever ground truth
    exists. Only ``iou_type="bbox"`` is implemented; "segm" will take masks.
    """
    if iou_type != "bbox":
        raise NotImplementedError(f"iou_type {iou_type!r} is not supported yet (only 'bbox')")
    if len(image_ids) != len(predictions):
        raise ValueError(f"{len(image_ids)} image ids but {len(predictions)} predictions")
    coco_gt = _coco_gt(gt)
    unknown = sorted(set(image_ids) - set(coco_gt.getImgIds()))
    if unknown:
        raise ValueError(f"image ids not in the ground truth: {unknown[:10]}")
    coco_dt = _coco_dt(coco_gt, _to_coco_results(image_ids, predictions))
    evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
    evaluator.params.imgIds = sorted(set(int(i) for i in image_ids))
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    metrics = {name: _nan_if_undefined(v) for name, v in zip(COCO_STAT_NAMES, evaluator.stats)}
    metrics.update(_per_class_ap(evaluator, coco_gt))
    return metrics


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

    ``class_names[k]`` names label value k; ``class_names[0]`` is "background". One
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
