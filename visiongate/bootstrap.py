"""Paired bootstrap over test images: per-image records computed once, metrics
recomputed on any resample of the images without evaluating again.

A resample is a row of ``resample_counts``: how many times each test image is drawn.
``metric_samples`` gives a metric's value on every resample; drawing the same counts
(same seed, same split) for candidate and champion, clean and corrupted, pairs them.

Metrics (the names visiongate.evaluate reports; ``supported`` / ``is_supported``):

- "detect": ``map50``, ``map50_95``, ``map75``, ``ap/<class>`` (AP@[.5:.95]) — COCO
  area "all", 100 detections per image and category, as visiongate.metrics (faster-coco-
  eval); ``precision``, ``recall``, ``precision/<class>``, ``recall/<class>`` at the
  operating point (``score_threshold``), as visiongate.diagnostics.
- "instance": the same, plus ``mask_map50``, ``mask_map50_95``, ``mask_map75``,
  ``mask_ap/<class>`` (segm IoU). (No ``mask_precision``: evaluate reports none.)
- "segment": ``miou``, ``dice``, ``pixel_acc``, ``iou/<class>`` from per-image pixel
  counts, as visiongate.semantic.semantic_metrics (classes absent from both prediction and
  ground truth of the resample are NaN and left out of the means).
- "classify", "multilabel": visiongate.bootstrap_classify (records from
  ``classification_records``), as visiongate.classify_metrics.

Not supported: ``map_small``, ``map_medium``, ``map_large`` and the ``mar*`` recalls
(the records hold area "all" at 100 detections only); asking for them raises ConfigError.

With every count 1 the values equal the evaluator's (tests/unit/test_bootstrap.py):
precision, recall and the semantic metrics exactly, AP to ~1e-8 (float32 precision in
the accumulation). A resample equals evaluating the resampled multiset of images, except
that detections of equal score in different images are ordered by image id (COCO orders
them by position in the list evaluated), which can move AP where scores tie.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from visiongate import bootstrap_classify, coco_ap, coco_records, diagnostics, semantic
from visiongate.bootstrap_records import KINDS, Records
from visiongate.errors import ConfigError, DataError

_BOX = {"map50": [0], "map75": [5], "map50_95": list(range(len(coco_records.IOU_THRS)))}
_SCALARS = {"detect": {*_BOX, "precision", "recall"},
            "instance": {*_BOX, "precision", "recall", *(f"mask_{n}" for n in _BOX)},
            "segment": {"miou", "dice", "pixel_acc"}, **bootstrap_classify.SCALARS}
_PER_CLASS = {"detect": {"ap", "precision", "recall"},
              "instance": {"ap", "precision", "recall", "mask_ap"},
              "segment": {"iou"}, **bootstrap_classify.PER_CLASS}


def detection_records(gt: dict, image_ids: list[int], predictions: list[dict], task: str,
                      score_threshold: float,
                      matches: list[diagnostics.ImageMatch] | None = None) -> Records:
    """Records of box (and for ``task`` "instance" mask) AP and of the operating point, for
    ``predictions[i]`` on ``image_ids[i]`` against the COCO dict ``gt`` (as evaluate).

    ``matches``: diagnostics.match of each image at ``score_threshold``, when the caller
    has them already (evaluate computes them for the confusion matrix); else computed
    here (the larger part of this function's time)."""
    if task not in ("detect", "instance"):
        raise ConfigError(f"detection records are for tasks 'detect' or 'instance', not {task!r}")
    if len(image_ids) != len(predictions):
        raise DataError(f"{len(image_ids)} image ids but {len(predictions)} predictions")
    ids = [int(i) for i in image_ids]
    known = {int(img["id"]) for img in gt["images"]}
    if len(set(ids)) != len(ids) or not set(ids) <= known:
        raise DataError("image ids must be distinct images of the ground truth")
    arrays: dict[str, np.ndarray] = {}
    for prefix, iou_type in [("box", "bbox")] + ([("mask", "segm")] if task == "instance" else []):
        coco, cats = coco_records.match_records(gt, ids, predictions, iou_type)
        arrays.update({f"{prefix}.{k}": v for k, v in coco.items()})
    if matches is None:
        matches = _matches(gt, ids, predictions, score_threshold)
    if len(matches) != len(ids):
        raise DataError(f"{len(ids)} images but {len(matches)} matches")
    counts = diagnostics.per_image_counts(matches, [c["id"] for c in cats])
    arrays.update({f"op.{k}": v for k, v in counts.items()})
    arrays["class_names"] = np.asarray([str(c["name"]) for c in cats])
    return Records(task, tuple(ids), arrays)


def _matches(gt: dict, image_ids: list[int], predictions: list[dict],
             threshold: float) -> list[diagnostics.ImageMatch]:
    by_image = defaultdict(list)
    for ann in gt.get("annotations", []):
        by_image[ann["image_id"]].append(ann)
    return [diagnostics.match(diagnostics.gt_boxes(by_image[i]), p, threshold)
            for i, p in zip(image_ids, predictions)]


def semantic_records(preds: list[np.ndarray], targets: list[np.ndarray], class_names,
                     image_ids: list[int] | None = None) -> Records:
    """Per-image pixel counts; ``class_names`` as semantic_metrics takes them (label 0 first).
    ``image_ids`` (the pairing key) default to the positions 0..N-1 (the split order)."""
    names = [str(c) for c in class_names]
    if len(preds) != len(targets):
        raise DataError(f"{len(preds)} predictions but {len(targets)} targets")
    shape = (len(preds), len(names))
    tp, target, pred = (np.zeros(shape, dtype=np.int64) for _ in range(3))
    for n, (p, t) in enumerate(zip(preds, targets)):
        cm = semantic.confusion_matrix([p], [t], len(names))
        tp[n], target[n], pred[n] = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    ids = tuple(int(i) for i in image_ids) if image_ids is not None else tuple(range(len(preds)))
    if len(ids) != len(preds) or len(set(ids)) != len(ids):
        raise DataError(f"{len(preds)} images need as many distinct image ids, not {len(ids)}")
    return Records("segment", ids,
                   {"px.tp": tp, "px.target": target, "px.pred": pred,
                    "class_names": np.asarray(names)})


def resample_counts(n_images: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n_images) int32: how often each image is drawn in each bootstrap
    resample (n_images draws with replacement), from numpy's Generator seeded ``seed``."""
    if n_images < 1 or resamples < 1:
        raise DataError(f"a bootstrap needs images and resamples, not {n_images} and {resamples}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_images, np.full(n_images, 1.0 / n_images),
                           size=resamples).astype(np.int32)


def supported(kind: str) -> set[str]:
    """Metric names ``metric_samples`` computes for ``kind``: scalar names, and per-class
    prefixes written ``"<prefix>/"`` (``"ap/"`` stands for every ``ap/<class>``)."""
    if kind not in KINDS:
        raise ConfigError(f"unknown records kind {kind!r}; choose from {list(KINDS)}")
    return set(_SCALARS[kind]) | {f"{p}/" for p in _PER_CLASS[kind]}


def is_supported(kind: str, name: str) -> bool:
    """Whether ``metric_samples`` computes ``name`` for ``kind`` (any class name accepted)."""
    prefix, slash, rest = name.partition("/")
    return name in _SCALARS.get(kind, ()) or bool(slash and rest and prefix in _PER_CLASS.get(kind, ()))


def metric_samples(records: Records, counts: np.ndarray,
                   names: Iterable[str]) -> dict[str, np.ndarray]:
    """Each metric of ``names`` on each resample: {name: (R,) float64}, NaN where undefined
    on that resample. Row r of ``counts`` (R, N) says how often each image is drawn."""
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != len(records.image_ids) or \
            counts.dtype.kind not in "iu" or (counts < 0).any():
        raise ValueError(f"counts must be (resamples, {len(records.image_ids)}) integers >= 0, "
                         f"not {counts.dtype} {counts.shape}")
    names = list(dict.fromkeys(names))
    classes = {str(c): k for k, c in enumerate(records.arrays["class_names"])}
    for name in names:
        if not is_supported(records.kind, name):
            raise ConfigError(f"metric {name!r} has no bootstrap for {records.kind} records; "
                              f"choose from {sorted(supported(records.kind))} (<prefix>/<class>)")
        if "/" in name and name.split("/", 1)[1] not in classes:
            raise ConfigError(f"metric {name!r}: no class {name.split('/', 1)[1]!r} "
                              f"(classes: {list(classes)})")
    if records.kind in bootstrap_classify.KINDS:
        return bootstrap_classify.metric_samples(records, counts, names)
    if records.kind == "segment":
        return _semantic_samples(records.arrays, counts, names, classes)
    out = _operating_samples(records.arrays, counts, names, classes)
    for prefix, box in (("", "box"), ("mask_", "mask")):
        wanted = [n for n in names if n.startswith(prefix) and n[len(prefix):] in _BOX
                  or n.startswith(f"{prefix}ap/")]
        if wanted:
            out.update(_ap_samples(records.arrays, box, prefix, counts, wanted, classes))
    return {name: out[name] for name in names}


def _mean_defined(values: np.ndarray) -> np.ndarray:
    """Row means over the non-NaN entries of (R, K) values; NaN for a row with none."""
    defined = ~np.isnan(values)
    n = defined.sum(axis=1)
    total = np.where(defined, values, 0.0).sum(axis=1)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _ap_samples(arrays, box: str, prefix: str, counts, names, classes) -> dict[str, np.ndarray]:
    records = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(f"{box}.")}
    full = any(n != f"{prefix}map50" and n != f"{prefix}map75" for n in names)
    thresholds = _BOX["map50_95"] if full else sorted({_BOX[n[len(prefix):]][0] for n in names})
    ap = coco_ap.weighted_ap(records, counts, thresholds)   # (R, T, K)
    at = {t: i for i, t in enumerate(thresholds)}
    out = {}
    for name in names:
        base = name[len(prefix):]
        if base.startswith("ap/"):
            out[name] = ap[:, :, classes[base[3:]]].mean(axis=1)
        elif base == "map50_95":
            out[name] = _mean_defined(ap.mean(axis=1))
        else:
            out[name] = _mean_defined(ap[:, at[_BOX[base][0]], :])
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _weighted(counts: np.ndarray, per_image: np.ndarray) -> np.ndarray:
    """counts @ per_image in float64: exact while the sums stay below 2**53."""
    return counts.astype(np.float64) @ per_image.astype(np.float64)


def _operating_samples(arrays, counts, names, classes) -> dict[str, np.ndarray]:
    wanted = [n for n in names if n.split("/")[0] in ("precision", "recall")]
    if not wanted:
        return {}
    tp, pred, actual = (_weighted(counts, arrays[k]) for k in ("op.tp", "op.pred", "op.gt"))
    out = {"precision": _ratio(tp.sum(axis=1), pred.sum(axis=1)),
           "recall": _ratio(tp.sum(axis=1), actual.sum(axis=1))}
    for name in wanted:
        if "/" in name:
            k = classes[name.split("/", 1)[1]]
            out[name] = _ratio(tp[:, k], (pred if name.startswith("precision") else actual)[:, k])
    return out


def _semantic_samples(arrays, counts, names, classes) -> dict[str, np.ndarray]:
    tp, target, pred = (_weighted(counts, arrays[k]) for k in ("px.tp", "px.target", "px.pred"))
    union = target + pred - tp
    present = union > 0
    iou, dice = _ratio(tp, union), _ratio(2 * tp, target + pred)
    total = target.sum(axis=1)
    out = {"pixel_acc": _ratio(tp.sum(axis=1), total)}
    # as semantic_metrics: iou[present].mean(), row by row for the same rounding
    out["miou"] = np.array([iou[r][present[r]].mean() if present[r].any() else math.nan
                            for r in range(len(counts))])
    out["dice"] = np.array([dice[r][present[r]].mean() if present[r].any() else math.nan
                            for r in range(len(counts))])
    for name in names:
        if name.startswith("iou/"):
            out[name] = iou[:, classes[name[4:]]]
    return {n: out[n] for n in names}
