"""COCO box/mask AP accumulated over images with integer image weights, so that it runs on
any bootstrap resample of the test images without evaluating again (the per-image step:
visiongate.coco_records). ``weighted_ap`` is ``COCOeval.accumulate`` with those weights
(precision in float32: within ~1e-8 of faster-coco-eval; tests/unit/test_bootstrap.py
checks 1e-6).
"""

from __future__ import annotations

import numpy as np

from visiongate.coco_records import IGNORED, REC_THRS, TP

_CELL_BUDGET = 1 << 23      # (resamples × detections) of one category at once


def weighted_ap(arrays: dict[str, np.ndarray], counts: np.ndarray,
                thresholds: list[int]) -> np.ndarray:
    """AP per (resample, IoU threshold index in ``thresholds``, category): COCOeval's
    accumulate on the test set in which image n appears ``counts[r, n]`` times; NaN where
    the category has no (counted) ground truth in that resample."""
    counts = np.asarray(counts)
    gt_count = arrays["gt_count"]
    n_cat = gt_count.shape[1]
    npig = np.rint(counts.astype(np.float64) @ gt_count).astype(np.int64)
    ap = np.full((len(counts), len(thresholds), n_cat), np.nan)
    bounds = np.searchsorted(arrays["det_cat"], np.arange(n_cat + 1))
    status = arrays["det_status"][:, thresholds]
    for k in range(n_cat):
        if not (npig[:, k] > 0).any():
            continue
        img, st = arrays["det_image"][bounds[k]:bounds[k + 1]], status[bounds[k]:bounds[k + 1]]
        step = max(1, _CELL_BUDGET // max(len(img), 1))
        for s in range(0, len(counts), step):
            ap[s:s + step, :, k] = _category_ap(np.take(counts[s:s + step], img, axis=1), st,
                                                npig[s:s + step, k])
    ap[np.broadcast_to((npig == 0)[:, None, :], ap.shape)] = np.nan
    return ap


def _category_ap(w: np.ndarray, status: np.ndarray, npig: np.ndarray) -> np.ndarray:
    """(resamples, thresholds) AP of one category: ``w`` (R, D) the weight of each of its
    detections (in accumulate's order) in each resample, ``npig`` (R,) its weighted
    ground-truth count (rows where it is 0 are meaningless: the caller drops them).

    COCO's AP is the mean over 101 recall thresholds x of the highest precision at any
    point whose recall tp / npig >= x. Recall rises only at true positives ("events"), so
    that is the running maximum from the end, ``best``, at the first event whose count
    reaches x; event e is that first event for the thresholds x with
    n_tp[e-1] < need(x) <= n_tp[e]: AP = sum_e best[e] * (C(n_tp[e]) - C(n_tp[e-1])) / 101,
    C(j) = how many thresholds need at most j true positives. No search, no sort.
    """
    out = np.zeros((len(w), status.shape[1]))
    reached = _thresholds_reached(npig).astype(np.float32)   # (R, npig.max() + 1): C
    shift = np.arange(len(w), dtype=np.int64)[:, None] * reached.shape[1]
    reached = reached.reshape(-1)
    # COCO's precision tp / (fp + tp + eps), fp + tp = the detections counted so far; in
    # float32 (exact counts below 2**24; precision to 6e-8, far below the 1e-6 checked)
    # (counted at least 1: before any detection counts, tp = 0 and the precision 0)
    seen = np.maximum(np.cumsum(w, axis=1, dtype=np.int32), 1).astype(np.float32)
    for t in range(status.shape[1]):
        tp = np.flatnonzero(status[:, t] == TP)
        if not len(tp):
            continue
        ignored = status[:, t] == IGNORED
        counted = np.maximum(np.cumsum(w * ~ignored, axis=1, dtype=np.int32), 1).astype(
            np.float32) if ignored.any() else seen
        n_tp = np.cumsum(np.take(w, tp, axis=1), axis=1, dtype=np.int32)
        precision = np.divide(n_tp, np.take(counted, tp, axis=1), dtype=np.float32)
        best = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
        at = reached[n_tp + shift]
        at[:, 1:] -= at[:, :-1].copy()
        out[:, t] = np.multiply(best, at).sum(axis=1, dtype=np.float64) / len(REC_THRS)
    return out


def _thresholds_reached(npig: np.ndarray) -> np.ndarray:
    """(R, J) table: for j true positives, how many of COCO's recall thresholds x have
    float(j) / npig >= x (the comparison its searchsorted makes on tp / npig). Rows with
    npig 0 (no AP: the caller drops them) are filled as for npig 1."""
    n = np.maximum(npig, 1).astype(np.float64)[:, None]
    j = np.ceil(REC_THRS * n)                     # the fewest true positives reaching x
    j = np.where((j >= 1) & ((j - 1) / n >= REC_THRS), j - 1, j)
    j = np.where(j / n < REC_THRS, j + 1, j).astype(np.int64)
    width = int(npig.max()) + 1
    j = np.minimum(j, width)   # never reached: counted past the table
    hist = np.bincount((j + np.arange(len(j))[:, None] * (width + 1)).ravel(),
                       minlength=len(j) * (width + 1)).reshape(len(j), width + 1)
    return np.cumsum(hist[:, :width], axis=1)
