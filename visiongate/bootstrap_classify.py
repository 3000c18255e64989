"""Paired-bootstrap records of image classification (visiongate.bootstrap kinds "classify"
and "multilabel"): each test image's probabilities and truth, from which every resample's
metrics are recomputed without predicting again.

A resample's metrics are those of visiongate.classify_metrics on the resampled multiset of
images, computed from per-image contributions weighted by the counts: single-label, each
image adds one to its true class (support), its top-1 class (predictions) and, when they
agree, to that class's hits; multi-label, per class a true positive, false positive or
false negative. ``ap/<class>`` and ``map`` are sklearn's average_precision_score with the
counts as sample weights, vectorised over the resamples (tests/unit/test_classify_metrics.py
checks both against scikit-learn). Supported names: vocab.CLASSIFY_METRICS plus
``precision_macro`` and ``recall_macro`` ("classify"), vocab.MULTILABEL_METRICS
("multilabel"), and the per-class prefixes ``precision/``, ``recall/``, ``f1/`` (and
``ap/``, multi-label). ``ece`` and ``hamming_loss`` are reported, not resampled.
"""

from __future__ import annotations

import numpy as np

from visiongate.bootstrap_records import Records
from visiongate.classify_metrics import DEFAULT_THRESHOLD, check_inputs, top_k
from visiongate.errors import DataError
from visiongate.vocab import CLASSIFY_METRICS, MULTILABEL_METRICS

KINDS = ("classify", "multilabel")
SCALARS = {"classify": {*CLASSIFY_METRICS, "precision_macro", "recall_macro"},
           "multilabel": set(MULTILABEL_METRICS)}
PER_CLASS = {"classify": {"precision", "recall", "f1"},
             "multilabel": {"ap", "precision", "recall", "f1"}}


def classification_records(probs, targets, class_names, multi_label: bool, thresholds,
                           image_ids) -> Records:
    """Records of ``probs`` (N, K) against ``targets`` (classify_metrics conventions: (N,)
    class indices, or (N, K) bool with per-class ``thresholds``, None for 0.5) on the test
    images ``image_ids`` (the pairing key, distinct, in split order)."""
    names = [str(c) for c in class_names]
    probs, targets, thresholds = check_inputs(probs, targets, names, multi_label, thresholds)
    ids = tuple(int(i) for i in image_ids)
    if len(ids) != len(probs) or len(set(ids)) != len(ids) or not ids:
        raise DataError(f"{len(probs)} images need as many distinct image ids, not {len(ids)}")
    arrays = {"cls.probs": probs, "class_names": np.asarray(names)}
    if multi_label:
        arrays["cls.target"] = targets.astype(bool)
        arrays["cls.thresholds"] = thresholds if thresholds is not None else \
            np.full(len(names), DEFAULT_THRESHOLD)
    else:
        arrays["cls.target"] = targets.astype(np.int64)
    return Records("multilabel" if multi_label else "classify", ids, arrays)


def top_k_hits(probs: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """(N,) bool: the true class among the k highest probabilities, ties ordered as
    sklearn's top_k_accuracy_score orders them (the higher class index first)."""
    ranked = np.argsort(probs, axis=1, kind="mergesort")[:, ::-1][:, :k]
    return (ranked == np.asarray(targets)[:, None]).any(axis=1)


def _weighted(weights: np.ndarray, per_image: np.ndarray) -> np.ndarray:
    """weights (R, N) @ per_image (N, ...) in float64: exact integer sums below 2**53."""
    return weights @ per_image.astype(np.float64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _mean_defined(values: np.ndarray) -> np.ndarray:
    """Row means over the non-NaN entries of (R, K); NaN for a row with none."""
    defined = ~np.isnan(values)
    n = defined.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(defined, values, 0.0).sum(axis=1) / np.maximum(n, 1),
                        np.nan)


def metric_samples(records: Records, counts: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """{name: (R,)} for ``names`` (checked by visiongate.bootstrap.metric_samples)."""
    weights = np.asarray(counts, dtype=np.float64)
    classes = {str(c): k for k, c in enumerate(records.arrays["class_names"])}
    if records.kind == "multilabel":
        out = _multilabel(records.arrays, weights, names)
    else:
        out = _single_label(records.arrays, weights)
    for name in names:
        prefix, slash, cls = name.partition("/")
        if slash:
            out[name] = out[prefix][:, classes[cls]]
    return {name: out[name] for name in names}


def _per_class(tp, predicted, actual) -> dict[str, np.ndarray]:
    """(R, K) precision, recall, F1 (NaN where undefined, as zero_division=np.nan)."""
    return {"precision": _ratio(tp, predicted), "recall": _ratio(tp, actual),
            "f1": _ratio(2 * tp, predicted + actual)}


def _single_label(arrays, weights) -> dict[str, np.ndarray]:
    probs, target = arrays["cls.probs"], arrays["cls.target"].astype(np.int64)
    k = probs.shape[1]
    pred = probs.argmax(axis=1)
    eye = np.eye(k)
    actual, predicted = _weighted(weights, eye[target]), _weighted(weights, eye[pred])
    tp = _weighted(weights, eye[target] * (pred == target)[:, None])
    total = weights.sum(axis=1)
    out = _per_class(tp, predicted, actual)
    f1_defined = np.where(np.isnan(out["f1"]), 0.0, out["f1"])
    out.update({
        "accuracy": _ratio(tp.sum(axis=1), total),
        "top5_accuracy": _ratio(_weighted(weights, top_k_hits(probs, target, top_k(k))), total),
        "balanced_accuracy": _mean_defined(out["recall"]),
        "f1_macro": _mean_defined(out["f1"]),
        "f1_weighted": _ratio((f1_defined * actual).sum(axis=1), actual.sum(axis=1)),
        "precision_macro": _mean_defined(out["precision"]),
        "recall_macro": _mean_defined(out["recall"]),
    })
    return out


def _multilabel(arrays, weights, names) -> dict[str, np.ndarray]:
    probs, target = arrays["cls.probs"], arrays["cls.target"].astype(bool)
    pred = probs >= arrays["cls.thresholds"]
    tp = _weighted(weights, pred & target)
    fp, fn = _weighted(weights, pred & ~target), _weighted(weights, ~pred & target)
    out = _per_class(tp, tp + fp, tp + fn)
    tps, errors = tp.sum(axis=1), (fp + fn).sum(axis=1)
    out.update({
        "f1_micro": _ratio(2 * tps, 2 * tps + errors),
        "f1_macro": _mean_defined(out["f1"]),
        "subset_accuracy": _ratio(_weighted(weights, (pred == target).all(axis=1)),
                                  weights.sum(axis=1)),
    })
    if any(n == "map" or n.startswith("ap/") for n in names):
        out["ap"] = np.stack([weighted_ap(probs[:, c], target[:, c], weights)
                              for c in range(probs.shape[1])], axis=1)
        out["map"] = _mean_defined(out["ap"])
    return out


def weighted_ap(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(R,) average_precision_score(positive, scores, sample_weight=weights[r]) for each row:
    sum over the distinct scores s, highest first, of (recall gained at s) * (precision at
    s), precision = weighted positives / weighted images scoring >= s. NaN where the row
    draws no positive image."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    ranked = scores[order]
    ends = np.append(np.flatnonzero(ranked[1:] != ranked[:-1]), len(ranked) - 1)
    drawn = weights[:, order]
    hits = np.cumsum(drawn * positive[order], axis=1)[:, ends]   # (R, distinct scores)
    seen = np.cumsum(drawn, axis=1)[:, ends]
    precision = _ratio(hits, seen)
    gained = np.diff(hits, axis=1, prepend=0.0)
    total = hits[:, -1]
    with np.errstate(invalid="ignore"):
        ap = np.where(gained > 0, gained * np.nan_to_num(precision), 0.0).sum(axis=1)
    return _ratio(ap, total)
