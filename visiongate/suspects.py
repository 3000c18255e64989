"""Suspected label mistakes: where a trained model disagrees with the labels (cleanlab).

    rows = find_suspects(checkpoint, {"train": dir, "val": dir})   # worst first
    write_suspects(rows, "suspects.csv"); suspects_gallery(rows, split_dirs, "suspects.png")

Each `Suspect` has a label-quality `score` in [0, 1] (cleanlab's convention: lower = more
suspect) and a `kind`:
- detection / instance (cleanlab ObjectLab's per-box scores; masks are not scored):
  `swapped_class` (a confident box of another class sits on the labelled one),
  `missing_box` (a confident box that overlaps no labelled box at all — so an unlabelled
  object touching a labelled one is never flagged; `annotation` None), `badly_placed` (the
  model's best box of the same class overlaps the labelled one only partly). Two changes
  to ObjectLab's defaults, both measured: lower probability thresholds (BoxThresholds) and
  a neighbour's box is no evidence about a box's place (_evidence_iou);
- classify: `wrong_label`, cleanlab's self-confidence (the probability of the given label);
- multilabel: `wrong_label` per image, cleanlab's multi-label score (every class's
  self-confidence, worst first, pooled by an exponential moving average);
- segment: `bad_mask`. cleanlab.segmentation needs per-pixel probabilities, and a semantic
  predict returns label maps only, so an image's score is the mean IoU of its mask and the
  predicted map over the classes present in either (background left out).
The model should not have trained on the split it scores (use val/test, or cross-fitting),
else it has learnt the mistakes. A classifier trained on the crops view (datasets/crops.py)
names the source image and annotation of each crop. Scores of different kinds are not on
one scale: compare rows of one kind.
"""

from __future__ import annotations

import dataclasses
import heapq
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from visiongate.datasets.coco import Split, load_split
from visiongate.errors import DataError
from visiongate.geometry import xywh_to_xyxy
from visiongate.suspects_images import (_classify_suspects, _multilabel_suspects,  # noqa: F401
                                        _semantic_suspects, _where, mask_agreement)
from visiongate.suspects_csv import (ISSUE_SCORE, KINDS, Box, Suspect,  # noqa: F401 (API)
                                     read_suspects, write_suspects)

DETECTION_TASKS = ("detect", "instance")
ALPHA, EUC_FACTOR = 0.9, 0.1  # ObjectLab's box similarity (cleanlab.internal.constants)
MATCH_IOU = 0.5  # a predicted box this close to a labelled box is that box's prediction
BATCH = 32


@dataclass(frozen=True)
class BoxThresholds:
    """ObjectLab's probability thresholds (cleanlab's high_ and low_probability_threshold).
    `high`: a box of another class (swapped_class) or over no label (missing_box) counts
    from this score; `low`: a same-class box counts as the object's place (badly_placed).
    cleanlab's defaults, 0.95 and 0.5, suit a confident model; a YOLOv8n trained from
    scratch (25 epochs, shapes) gave only 9 boxes above 0.95 on 64 test images holding 158
    objects. These values, chosen on val, found 65 % of injected swaps and 72 % of shifted
    boxes there (0.95/0.5: 7 % and 62 %; benchmarks/bench_suspects.py, 5 seeds)."""
    high: float = 0.5
    low: float = 0.3


def _sort_key(row: Suspect):
    return row.score, row.split, row.file, row.annotation or -1, row.kind


def _fmt(box) -> str:
    return "[" + ",".join(f"{v:.0f}" for v in box) + "]"


def _box(values) -> Box:
    return tuple(round(float(v), 1) for v in values)  # type: ignore[return-value]


# ---- detection: ObjectLab ------------------------------------------------------------
def _area(b: np.ndarray) -> np.ndarray:
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def _centres(b: np.ndarray) -> np.ndarray:
    return (b[:, :2] + b[:, 2:]) / 2


def _image_inputs(boxes: np.ndarray, labels: np.ndarray, pred: dict) -> dict:
    """One image's `auxiliary_inputs` entry (the keys cleanlab's compute_*_box_scores
    document), built with numpy instead of cleanlab's per-pair Python loops; the same
    formulas: similarity = ALPHA * IoU + (1 - ALPHA) * exp(-EUC_FACTOR * centre distance)."""
    pboxes = np.asarray(pred["boxes"], float).reshape(-1, 4)
    lo = np.maximum(boxes[:, None, :2], pboxes[None, :, :2])
    hi = np.minimum(boxes[:, None, 2:], pboxes[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    iou = inter / np.clip(_area(boxes)[:, None] + _area(pboxes)[None] - inter, 1e-6, None)
    dist = np.linalg.norm(_centres(boxes)[:, None] - _centres(pboxes)[None], axis=2)
    return {"pred_labels": np.asarray(pred["labels"], int) - 1, "pred_bboxes": pboxes,
            "pred_label_probs": np.asarray(pred["scores"], float), "lab_labels": labels - 1,
            "lab_bboxes": boxes, "iou_matrix": _evidence_iou(iou),
            "similarity_matrix": ALPHA * iou + (1 - ALPHA) * np.exp(-dist * EUC_FACTOR)}


def _evidence_iou(iou: np.ndarray) -> np.ndarray:
    """The IoU matrix (labelled x predicted) with 0 where the predicted box belongs to
    ANOTHER labelled box (IoU >= MATCH_IOU with it). Only badloc reads it (swap does not
    use IoU, overlooked recomputes its own). Why: ObjectLab scores a labelled box whose own
    prediction is weak by any strong same-class box touching it, so a neighbour's box at
    IoU 0.01 gave score 0.01 and buried every injected shift (val, seed 0: 0 -> 5 of 8)."""
    matched = iou >= MATCH_IOU
    elsewhere = matched.sum(axis=0, keepdims=True) - matched > 0
    return np.where(elsewhere, 0.0, iou)


def _labelled_boxes(split: Split, image: dict) -> tuple[list[dict], np.ndarray, np.ndarray]:
    anns = [a for a in split.annotations.get(image["id"], [])  # validate.py reports bad boxes
            if not a.get("iscrowd") and isinstance(a.get("bbox"), list) and len(a["bbox"]) == 4]
    boxes = xywh_to_xyxy([a["bbox"] for a in anns]).reshape(-1, 4)
    return anns, boxes, np.array([int(a["category_id"]) for a in anns], dtype=int)


def _box_rows(aux: dict, anns: list[dict], scores: tuple, names, where: tuple,
              th: BoxThresholds) -> list[Suspect]:
    """One image's rows from its swap, overlooked and badloc scores; each names the
    model's box the score came from."""
    swap, overlooked, badloc = scores
    p, plab, pbox, sim, iou = (aux[k] for k in ("pred_label_probs", "pred_labels",
                                                "pred_bboxes", "similarity_matrix", "iou_matrix"))

    def row(ann, kind, score, detail, i=None):
        box = None if i is None else _box(pbox[i])
        return Suspect(*where, ann, kind, float(np.clip(score, 0, 1)), detail, box)

    rows = []
    for j, ann in enumerate(anns):
        k = aux["lab_labels"][j]
        other = np.flatnonzero((plab != k) & (p > th.high))
        if swap[j] < 1 and other.size:
            i = other[np.argmax(sim[j, other])]
            rows.append(row(ann["id"], "swapped_class", swap[j], f"labelled {names[k]}; "
                            f"the model sees {names[plab[i]]} ({p[i]:.2f})", i))
        elif swap[j] < 1:  # cleanlab's overlapping-label check
            rows.append(row(ann["id"], "swapped_class", swap[j], f"labelled {names[k]}; a "
                            "box of another class is labelled on the same object"))
        same = np.flatnonzero((plab == k) & (p > th.low) & (iou[j] > 0))
        if badloc[j] < 1 and same.size:
            i = same[np.argmax(sim[j, same])]
            rows.append(row(ann["id"], "badly_placed", badloc[j],
                            f"{names[k]} box at {_fmt(aux['lab_bboxes'][j])}; the model "
                            f"puts it at {_fmt(pbox[i])} (IoU {iou[j, i]:.2f})", i))
    for i in np.flatnonzero(~np.isnan(overlooked)):
        rows.append(row(None, "missing_box", overlooked[i],
                        f"missing box: {names[plab[i]]} {p[i]:.2f} at {_fmt(pbox[i])}", i))
    return rows


def _boxes_from(aux: dict, min_prob: float) -> dict:
    """aux without the predicted boxes scored under min_prob. Once the split's similarity
    floor is taken, ObjectLab never reads them at these thresholds: the scores stay the
    same, and cleanlab's per-box Python loops shrink ~10x at conf 0.001 (measured)."""
    keep = aux["pred_label_probs"] >= min_prob
    return {**aux, **{k: aux[k][keep] for k in ("pred_labels", "pred_bboxes", "pred_label_probs")},
            "iou_matrix": aux["iou_matrix"][:, keep],
            "similarity_matrix": aux["similarity_matrix"][:, keep]}


def _detection_suspects(split: Split, predictions: list, name: str,
                        th: BoxThresholds) -> list[Suspect]:
    from cleanlab.object_detection import rank as od_rank  # cleanlab imports sklearn: seconds

    labelled = [_labelled_boxes(split, image) for image in split.images]
    aux, floor = [], 1.0
    for (_, boxes, labels), pred in zip(labelled, predictions, strict=True):
        image_aux = _image_inputs(boxes, labels, pred)
        similar = image_aux["similarity_matrix"]
        floor = min(floor, float(similar[similar > 0].min(initial=1.0)))
        aux.append(_boxes_from(image_aux, min(th.high, th.low)))
    for a in aux:  # over the whole split and every box, as cleanlab computes it
        a["min_possible_similarity"] = floor
    kwargs = {"alpha": ALPHA, "auxiliary_inputs": aux}
    swap = od_rank.compute_swap_box_scores(high_probability_threshold=th.high, **kwargs)
    overlooked = od_rank.compute_overlooked_box_scores(high_probability_threshold=th.high,
                                                       **kwargs)
    badloc = od_rank.compute_badloc_box_scores(low_probability_threshold=th.low, **kwargs)
    names = split.class_names
    return [row for n, image in enumerate(split.images)
            for row in _box_rows(aux[n], labelled[n][0], (swap[n], overlooked[n], badloc[n]),
                                 names, (name, image["file_name"]), th)]


_SCORERS = {"classify": _classify_suspects, "multilabel": _multilabel_suspects,
            "segment": _semantic_suspects}


def score_predictions(split: Split, predictions: list, task: str, name: str | None = None,
                      thresholds: BoxThresholds = BoxThresholds()) -> list[Suspect]:
    """Suspects of one split from a model's predictions (one per split.images entry, in the
    format of visiongate.models for `task`), worst first. `name` (default: the split
    folder's name) goes in Suspect.split. iscrowd annotations are ignored."""
    if task not in (*_SCORERS, *DETECTION_TASKS):
        raise ValueError(f"unknown task {task!r}; expected one of "
                         f"{sorted((*_SCORERS, *DETECTION_TASKS))}")
    if len(predictions) != len(split.images):
        raise ValueError(f"{len(predictions)} predictions for {len(split.images)} images")
    name = split.root.name if name is None else name
    rows = (_detection_suspects(split, predictions, name, thresholds)
            if task in DETECTION_TASKS else _SCORERS[task](split, predictions, name))
    return sorted(rows, key=_sort_key)


def find_suspects(checkpoint: Path, split_dirs: dict[str, Path], limit: int = 1000,
                  thresholds: BoxThresholds = BoxThresholds()) -> list[Suspect]:
    """The `limit` worst suspects, by score, of the splits {name: split dir} under the
    checkpoint's model. Images are predicted BATCH at a time; only boxes (detection, whose
    ObjectLab scores need the whole split) or the current batch (other tasks) are held."""
    from visiongate import models

    meta, predict = models.CheckpointMeta.read(checkpoint), models.load(checkpoint)
    worst: list[Suspect] = []
    for name, split_dir in split_dirs.items():
        split = load_split(Path(split_dir))
        if split.class_names != tuple(meta.class_names):
            raise DataError(f"{split_dir}: classes {list(split.class_names)} differ from the "
                            f"model's {list(meta.class_names)}")
        batches = [split.images[i:i + BATCH] for i in range(0, len(split.images), BATCH)]
        if meta.task in DETECTION_TASKS:
            preds = [{k: p[k] for k in ("boxes", "scores", "labels")}  # masks dropped
                     for batch in batches
                     for p in predict([split.image_path(image) for image in batch])]
            found = score_predictions(split, preds, meta.task, name, thresholds)
            worst = heapq.nsmallest(limit, worst + found, key=_sort_key)
            continue
        for batch in batches:
            found = score_predictions(dataclasses.replace(split, images=batch),
                                      predict([split.image_path(i) for i in batch]),
                                      meta.task, name)
            worst = heapq.nsmallest(limit, worst + found, key=_sort_key)
    return worst
