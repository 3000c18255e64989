"""Image classification metrics (scikit-learn), per-class thresholds for multi-label
models, and the calibration bins of a reliability diagram.

Conventions (the gate reads these names; visiongate.vocab lists the gateable ones):

- Single-label: ``probs`` (N, K), one probability vector per image (index k-1 is category
  id k); ``targets`` (N,) the true class index 0..K-1. The prediction is the top-1 class
  (``argmax``, the first on ties), whatever its probability: ``min_score`` (config) rejects
  uncertain predictions when serving, not here.
- Multi-label: ``targets`` (N, K) bool; class k is predicted when ``probs[:, k] >=
  thresholds[k]`` (0.5 when no thresholds are given).
- Per-class precision / recall / F1 are NaN where undefined (no prediction of the class;
  no image of it; neither), and the macro means leave NaN classes out
  (``zero_division=np.nan``), so a class absent from the test split neither counts as 0
  nor drags the means.

ECE (expected calibration error, single-label): the top-1 probability of each image goes
into one of 15 equal-width bins (b/15, (b+1)/15] (0 into the first);
ECE = sum over bins of (images in bin / N) * |accuracy in bin - mean top-1 probability in
bin| (Guo et al., 2017).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    hamming_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from visiongate.errors import DataError

ECE_BINS = 15
TOP_K = 5
DEFAULT_THRESHOLD = 0.5


def top_k(num_classes: int) -> int:
    """k of ``top5_accuracy``: 5, or every class when there are fewer."""
    return min(TOP_K, num_classes)


def check_inputs(probs, targets, class_names, multi_label: bool,
                 thresholds=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(probs float (N, K), targets, thresholds (K,) or None) checked; DataError otherwise."""
    probs, targets = np.asarray(probs), np.asarray(targets)
    k = len(class_names)
    if probs.ndim != 2 or probs.shape[1] != k or probs.dtype.kind != "f":
        raise DataError(f"probabilities must be a float (images, {k}) array, not "
                        f"{probs.dtype} {probs.shape}")
    if not np.isfinite(probs).all() or (probs < 0).any() or (probs > 1).any():
        raise DataError("probabilities must be finite and within [0, 1]")
    if multi_label:
        if targets.shape != probs.shape or targets.dtype.kind != "b":
            raise DataError(f"multi-label targets must be a bool {probs.shape} array, "
                            f"not {targets.dtype} {targets.shape}")
    elif targets.shape != (len(probs),) or targets.dtype.kind not in "iu" or \
            (targets < 0).any() or (targets >= k).any():
        raise DataError(f"targets must be {len(probs)} class indices 0..{k - 1}")
    if thresholds is not None:
        thresholds = np.asarray(thresholds, dtype=np.float64)
        if thresholds.shape != (k,) or not np.isfinite(thresholds).all() or \
                (thresholds < 0).any() or (thresholds > 1).any():
            raise DataError(f"thresholds must be {k} numbers within [0, 1]")
    return probs, targets, thresholds


def classification_metrics(probs, targets, class_names, multi_label: bool,
                           thresholds=None) -> dict[str, float]:
    """The task's metrics (module docstring). Single-label: ``accuracy``,
    ``top5_accuracy`` (top-k, k = min(5, K)), ``balanced_accuracy``, ``f1_macro``,
    ``f1_weighted``, ``precision_macro``, ``recall_macro``, ``ece``. Multi-label: ``map``
    (mean over the classes with a positive image of sklearn's average_precision_score),
    ``f1_micro``, ``f1_macro``, ``subset_accuracy``, ``hamming_loss``, ``ap/<class>`` (NaN
    without a positive image). Both: ``precision/<class>``, ``recall/<class>``,
    ``f1/<class>``."""
    names = [str(c) for c in class_names]
    probs, targets, thresholds = check_inputs(probs, targets, names, multi_label, thresholds)
    if len(probs) == 0:
        raise DataError("no images to score")
    if multi_label:
        return _multilabel(probs, targets, names, thresholds)
    return _single_label(probs, targets, names)


def _per_class(targets, preds, names, labels) -> dict[str, float]:
    precision, recall, f1, _ = precision_recall_fscore_support(
        targets, preds, labels=labels, average=None, zero_division=np.nan)
    out = {}
    for prefix, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        out.update({f"{prefix}/{n}": float(v) for n, v in zip(names, values)})
    return out


def _single_label(probs, targets, names) -> dict[str, float]:
    k, labels = len(names), list(range(len(names)))
    preds = probs.argmax(axis=1)
    # binary scores are one column for sklearn; k >= K scores 1 (sklearn warns; it cannot
    # take a single class)
    scores = probs[:, 1] if k == 2 else probs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # classes absent from targets, k >= K
        out = {"accuracy": accuracy_score(targets, preds),
               "top5_accuracy": 1.0 if k == 1 else
               top_k_accuracy_score(targets, scores, k=top_k(k), labels=labels),
               "balanced_accuracy": balanced_accuracy_score(targets, preds)}
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(targets, preds, labels=labels,
                                                     average=average, zero_division=np.nan)
        out[f"f1_{average}"] = f
        if average == "macro":
            out.update(precision_macro=p, recall_macro=r)
    out["ece"] = reliability(probs, targets).ece
    out.update(_per_class(targets, preds, names, labels))
    return {name: float(v) for name, v in out.items()}


def _multilabel(probs, targets, names, thresholds) -> dict[str, float]:
    if thresholds is None:
        thresholds = np.full(len(names), DEFAULT_THRESHOLD)
    preds = probs >= thresholds
    ap = [average_precision_score(targets[:, c], probs[:, c]) if targets[:, c].any()
          else math.nan for c in range(len(names))]
    defined = [v for v in ap if not math.isnan(v)]
    out = {"map": float(np.mean(defined)) if defined else math.nan,
           "f1_micro": f1_score(targets, preds, average="micro", zero_division=np.nan),
           "f1_macro": f1_score(targets, preds, average="macro", zero_division=np.nan),
           "subset_accuracy": accuracy_score(targets, preds),
           "hamming_loss": hamming_loss(targets, preds)}
    out.update({f"ap/{n}": v for n, v in zip(names, ap)})
    out.update(_per_class(targets, preds, names, None))
    return {name: float(v) for name, v in out.items()}


def choose_thresholds(probs, targets, target_precision: float | None = None) -> np.ndarray:
    """(K,) per-class thresholds of a multi-label model, chosen on validation images
    (class k is predicted when its probability is >= its threshold).

    Candidates are the probabilities the class's images have (sklearn
    precision_recall_curve). Without ``target_precision``: the candidate with the best
    F1 = 2PR / (P + R); ties go to the higher threshold. With it: among the candidates
    whose precision is >= target_precision, the one with the highest recall — the lowest
    such threshold, except that lowering it further without gaining recall (adding only
    false positives) does not count, so ties go to the higher threshold; when no candidate
    reaches the precision, the best-F1 one. A class without a positive image in ``targets``
    keeps 0.5.
    """
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets)
    if probs.ndim != 2 or targets.shape != probs.shape or targets.dtype.kind != "b":
        raise DataError(f"choose_thresholds needs (images, classes) probabilities and bool "
                        f"targets of one shape, not {probs.shape} and {targets.dtype} "
                        f"{targets.shape}")
    out = np.full(probs.shape[1], DEFAULT_THRESHOLD)
    for c in range(probs.shape[1]):
        if targets[:, c].any():
            out[c] = _class_threshold(probs[:, c], targets[:, c], target_precision)
    return out


def _class_threshold(scores, positives, target_precision: float | None) -> float:
    precision, recall, thresholds = precision_recall_curve(positives, scores)
    precision, recall = precision[:-1], recall[:-1]   # the last point has no threshold
    eps = 1e-12                                       # float noise between equal ratios
    if target_precision is not None:
        reaching = precision >= target_precision - eps
        if reaching.any():
            best = recall[reaching].max()
            return float(thresholds[reaching & (recall >= best - eps)].max())
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(thresholds[f1 >= f1.max() - eps].max())


@dataclass(frozen=True)
class Reliability:
    """Calibration bins: ``edges`` (B + 1,), and per bin ``count``, mean ``confidence``
    and ``accuracy`` (NaN in an empty bin); ``ece`` as in the module docstring."""

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    ece: float


def reliability(probs, targets, bins: int = ECE_BINS) -> Reliability:
    """Reliability-diagram bins of predictions. Single-label (``targets`` (N,) class
    indices): each image's top-1 probability, correct when the top-1 class is its class.
    Multi-label (``targets`` (N, K) bool): each (image, class) probability, correct when the
    class is present."""
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets)
    if targets.ndim == 2:
        confidence, correct = probs.ravel(), targets.astype(bool).ravel()
    else:
        confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == targets
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.digitize(confidence, edges[1:-1], right=True)   # (lo, hi]; 0 in the first
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(index, weights=confidence, minlength=bins) / count
        acc = np.bincount(index, weights=correct.astype(np.float64), minlength=bins) / count
    gaps = np.where(count > 0, np.abs(acc - conf), 0.0)
    ece = float((count * gaps).sum() / count.sum()) if count.sum() else math.nan
    return Reliability(edges, count, conf, acc, ece)
