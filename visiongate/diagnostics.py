"""A detector at its operating point: post-processing, matching, confusion matrix,
precision / recall per class, and the images it gets most wrong.

mAP integrates over every score; users deploy one threshold. These numbers describe
that threshold (params: `score_threshold`). Pure functions: numpy in, numpy/dicts out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision import ops

from visiongate import geometry
from visiongate.metrics import nms

MATCH_IOU = 0.5


def postprocess(pred: dict, conf: float, nms_iou: float, class_agnostic: bool) -> dict:
    """Drop detections below `conf`, then NMS (per class, or over all classes)."""
    keep = np.asarray(pred["scores"]) >= conf
    kept = {k: np.asarray(v)[keep] for k, v in pred.items()}
    order = nms(kept["boxes"], kept["scores"], nms_iou, None if class_agnostic else kept["labels"])
    return {k: v[order] for k, v in kept.items()}


@dataclass(frozen=True)
class ImageMatch:
    """One image's detections at the operating point, matched to its ground truth."""

    gt_boxes: np.ndarray      # (G, 4) xyxy
    gt_labels: np.ndarray     # (G,)
    boxes: np.ndarray         # (D, 4) detections with score >= threshold
    labels: np.ndarray        # (D,)
    scores: np.ndarray        # (D,)
    gt_match: np.ndarray      # (G,) index of the matched detection, -1 = missed
    det_match: np.ndarray     # (D,) index of the matched ground truth, -1 = false positive

    @property
    def errors(self) -> int:
        """Misses + false positives + matched boxes with the wrong class."""
        wrong = sum(self.labels[d] != self.gt_labels[g]
                    for d, g in enumerate(self.det_match) if g >= 0)
        return int((self.gt_match < 0).sum() + (self.det_match < 0).sum() + wrong)


def gt_boxes(annotations: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(xyxy boxes, category ids) of an image's non-crowd COCO annotations."""
    anns = [a for a in annotations if not a.get("iscrowd")]
    boxes = geometry.xywh_to_xyxy([a["bbox"] for a in anns])
    return boxes, np.array([a["category_id"] for a in anns], dtype=np.int64)


def match(gt: tuple[np.ndarray, np.ndarray], pred: dict, threshold: float) -> ImageMatch:
    """Greedy match by descending score: each detection takes the unmatched ground-truth
    box it overlaps most, if IoU >= 0.5, whatever the class (so class confusions show)."""
    keep = np.asarray(pred["scores"]) >= threshold
    order = np.argsort(-np.asarray(pred["scores"])[keep], kind="stable")
    boxes = np.asarray(pred["boxes"], dtype=np.float64).reshape(-1, 4)[keep][order]
    labels = np.asarray(pred["labels"], dtype=np.int64)[keep][order]
    scores = np.asarray(pred["scores"], dtype=np.float64)[keep][order]
    gt_b, gt_l = gt
    gt_match = np.full(len(gt_b), -1, dtype=np.int64)
    det_match = np.full(len(boxes), -1, dtype=np.int64)
    if len(gt_b) and len(boxes):
        iou = ops.box_iou(torch.as_tensor(boxes), torch.as_tensor(gt_b)).numpy()
        for d in range(len(boxes)):
            candidates = np.where(gt_match < 0, iou[d], -1.0)
            g = int(candidates.argmax())
            if candidates[g] >= MATCH_IOU:
                gt_match[g], det_match[d] = d, g
    return ImageMatch(gt_b, gt_l, boxes, labels, scores, gt_match, det_match)


def confusion(matches: list[ImageMatch], category_ids: list[int]) -> np.ndarray:
    """(K+1, K+1) counts; row = true class, column = predicted, in `category_ids` order
    after index 0 = background (column 0: missed objects; row 0: false positives)."""
    index = {int(c): k + 1 for k, c in enumerate(category_ids)}
    cm = np.zeros((len(index) + 1, len(index) + 1), dtype=np.int64)
    for m in matches:
        for g, d in enumerate(m.gt_match):
            cm[index[int(m.gt_labels[g])], index[int(m.labels[d])] if d >= 0 else 0] += 1
        for d, g in enumerate(m.det_match):
            if g < 0:
                cm[0, index[int(m.labels[d])]] += 1
    return cm


def precision_recall(cm: np.ndarray, class_names: list[str]) -> dict[str, float]:
    """Micro `precision`/`recall` over all classes plus `precision/<c>`, `recall/<c>`.

    NaN where undefined: no detections of a class (precision) or no objects (recall).
    """
    tp = np.diag(cm)[1:].astype(np.float64)
    predicted, actual = cm[:, 1:].sum(axis=0), cm[1:, :].sum(axis=1)
    out = {"precision": tp.sum() / predicted.sum() if predicted.sum() else float("nan"),
           "recall": tp.sum() / actual.sum() if actual.sum() else float("nan")}
    for k, name in enumerate(class_names):
        out[f"precision/{name}"] = tp[k] / predicted[k] if predicted[k] else float("nan")
        out[f"recall/{name}"] = tp[k] / actual[k] if actual[k] else float("nan")
    return {k: float(v) for k, v in out.items()}


def per_image_counts(matches: list[ImageMatch], category_ids: list[int]) -> dict[str, np.ndarray]:
    """Per image, what precision_recall sums: (N, K) arrays, classes in `category_ids`
    order — "tp" (the confusion's diagonal: boxes matched by a detection of their class),
    "pred" (column sums: detections) and "gt" (row sums: ground-truth boxes). Summed over
    the images they are `confusion(matches, ...)`'s; one pass over all images (bootstrap)."""
    index = {int(c): k for k, c in enumerate(category_ids)}
    n, k = len(matches), len(index)

    def cells(labels: list[np.ndarray]) -> np.ndarray:   # image * k + class index
        flat = np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64)
        image = np.repeat(np.arange(n), [len(v) for v in labels])
        return image * k + np.asarray([index[int(c)] for c in flat], dtype=np.int64)

    gt, det = cells([m.gt_labels for m in matches]), cells([m.labels for m in matches])
    matched = np.concatenate([m.gt_match for m in matches]) if matches else np.zeros(0, np.int64)
    first_det = np.repeat(np.cumsum([0] + [len(m.labels) for m in matches])[:-1],
                          [len(m.gt_labels) for m in matches])
    right = matched >= 0
    right[right] = det[first_det[right] + matched[right]] == gt[right]
    return {name: np.bincount(cell, minlength=n * k).reshape(n, k)
            for name, cell in (("tp", gt[right]), ("pred", det), ("gt", gt))}


def worst(scores: list[float], n: int, highest: bool = True) -> list[int]:
    """Indices of the n worst items: most errors (highest) or lowest score, ties by index."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i] if highest else scores[i], i))
    return order[:n]
