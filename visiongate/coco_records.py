"""COCO box/mask AP split into its per-image step and its accumulation over images, so
that the accumulation can run on any weighting of the test images (a bootstrap
resample) without evaluating again. Used by visiongate.bootstrap.

COCOeval (faster-coco-eval, as visiongate.metrics runs it) matches, per image and
category, the detections (highest score first, at most 100) to the ground truth at each
IoU threshold, then accumulates per category over images. faster-coco-eval keeps the
per-image matches inside C++ (no ``evalImgs``), so ``match_records`` recomputes them:
the IoUs with the very functions COCOeval_faster uses (``faster_coco_eval.core.mask``:
``calculateRleForAllAnnotations``, ``iou``), the greedy matching of
``COCOeval.evaluateImg`` vectorised over (image, category) pairs, area range "all".
``weighted_ap`` (visiongate.coco_ap) is ``COCOeval.accumulate`` with integer image weights.
"""

from __future__ import annotations

import numpy as np
from faster_coco_eval.core import mask as coco_mask
from faster_coco_eval.core.cocoeval import Params

from visiongate import geometry, metrics

_PARAMS = Params(iouType="bbox")
IOU_THRS = np.asarray(_PARAMS.iouThrs, dtype=np.float64)   # 0.50, 0.55, ..., 0.95
REC_THRS = np.asarray(_PARAMS.recThrs, dtype=np.float64)   # 0.00, 0.01, ..., 1.00
MAX_DETS = int(_PARAMS.maxDets[-1])                       # 100 per image and category
AREA_ALL = tuple(float(v) for v in _PARAMS.areaRng[0])     # area range "all"
TP, FP, IGNORED = 1, 0, -1                                 # det_status values
_EPS = np.spacing(1)                                       # as COCOeval.accumulate
_PAD_BUDGET = 1 << 18       # (pairs × ground-truth boxes) matched at once


def _group(keys: np.ndarray, *tiebreak: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order sorting by ``keys`` then ``tiebreak`` (last first), and each item's rank in its
    key group."""
    order = np.lexsort((np.arange(len(keys)), *tiebreak, keys))
    sorted_keys = keys[order]
    first = np.searchsorted(sorted_keys, sorted_keys)
    return order, np.arange(len(keys)) - first


def _rles(anns: list[dict], sizes: dict) -> list[dict]:
    """Each annotation's RLE, as COCOeval_faster._prepare computes it."""
    anns = [{"image_id": a["image_id"], "segmentation": a["segmentation"]} for a in anns]
    coco_mask.calculateRleForAllAnnotations(anns, sizes, True, False, 0.02, 1)
    return [a["rle"] for a in anns]


def _outside_all(area: np.ndarray) -> np.ndarray:
    return (area < AREA_ALL[0]) | (area > AREA_ALL[1])


def _area(shapes) -> np.ndarray:
    """Detection areas as COCO's loadRes sets them: box area, or mask area of RLEs."""
    if isinstance(shapes, np.ndarray):
        return shapes[:, 2] * shapes[:, 3]
    return np.asarray(coco_mask.area(shapes), dtype=np.float64).reshape(-1) if shapes \
        else np.zeros(0)


class _Side:
    """Ground truth or detections: per item its (image, category) pair key, score, flags
    and shape (xywh box rows, or RLEs), ordered by pair then as COCOeval orders them."""

    def __init__(self, key, shapes, order, score=None, ignore=None, crowd=None):
        self.key = key[order]
        self.shapes = shapes[order] if isinstance(shapes, np.ndarray) else \
            [shapes[i] for i in order]
        self.score = None if score is None else score[order]
        self.ignore = None if ignore is None else ignore[order]
        self.crowd = None if crowd is None else crowd[order]


def _ground_truth(gt: dict, position: dict, cat_index: dict, iou_type: str) -> _Side:
    """The split's annotations of evaluated categories; ignored = crowd or area outside
    "all" (COCOeval_faster takes ``ignore`` from ``iscrowd`` only); per pair in annotation
    order, ignored last."""
    n_cat = len(cat_index)
    sizes = {img["id"]: (img.get("height"), img.get("width")) for img in gt["images"]}
    anns = [a for a in gt.get("annotations", [])
            if a["image_id"] in position and a["category_id"] in cat_index]
    key = np.asarray([position[a["image_id"]] * n_cat + cat_index[a["category_id"]]
                      for a in anns], dtype=np.int64)
    crowd = np.asarray([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
    area = np.asarray([a["area"] if "area" in a else
                       metrics._area(a, *sizes[a["image_id"]], iou_type) for a in anns],
                      dtype=np.float64)
    shapes = _rles(anns, sizes) if iou_type == "segm" else \
        np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    ignore = crowd | _outside_all(area)
    order, _ = _group(key, ignore)
    return _Side(key, shapes, order, ignore=ignore, crowd=crowd)


def _detections(predictions: list[dict], sizes: list, cat_index: dict,
                iou_type: str) -> tuple[_Side, np.ndarray]:
    """Detections of evaluated categories, at most MAX_DETS per pair, per pair by score
    (ties in prediction order); and each one's rank in its pair."""
    n_cat = len(cat_index)
    labels = [np.asarray(p["labels"]).reshape(-1).astype(np.int64) for p in predictions]
    image = np.repeat(np.arange(len(predictions)), [len(v) for v in labels])
    labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    score = np.concatenate([np.asarray(p["scores"], dtype=np.float64).reshape(-1)
                            for p in predictions]) if predictions else np.zeros(0)
    if iou_type == "segm":
        shapes = _rles([{"image_id": n, "segmentation": rle} for n, p in enumerate(predictions)
                        for rle in metrics._mask_rles(p)], dict(enumerate(sizes)))
    else:   # the COCO results' boxes, converted as visiongate.metrics converts them
        shapes = geometry.xyxy_to_xywh(np.concatenate(
            [np.asarray(p["boxes"], dtype=np.float64).reshape(-1, 4) for p in predictions])
            if predictions else np.zeros((0, 4)))
    known = np.isin(labels, list(cat_index))
    cat = np.asarray([cat_index.get(int(c), -1) for c in labels], dtype=np.int64)
    key = np.where(known, image * n_cat + cat, -1)
    order, rank = _group(key, -score)
    keep = known[order] & (rank < MAX_DETS)
    return _Side(key, shapes, order[keep], score=score), rank[keep]


def match_records(gt: dict, image_ids: list[int], predictions: list[dict],
                  iou_type: str) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Per-detection match records of ``predictions`` (one per ``image_ids`` entry).

    Returns (arrays, categories sorted by id). Arrays: ``det_image`` (D,) index into
    image_ids, ``det_cat`` (D,) category index, ``det_score`` (D,), ``det_status`` (D, T)
    int8 TP / FP / IGNORED per IoU threshold (IOU_THRS), sorted as accumulate sorts them
    (category, then score descending, ties by image id then rank in the image), and
    ``gt_count`` (N, K) the ground-truth boxes COCO counts (not crowd) per image and
    category. Detections beyond 100 per image and category, and of categories absent from
    ``gt``, are left out as COCOeval leaves them out.
    """
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    cat_index = {int(c["id"]): k for k, c in enumerate(cats)}
    n_img, n_cat = len(image_ids), len(cats)
    g = _ground_truth(gt, {int(i): n for n, i in enumerate(image_ids)}, cat_index, iou_type)
    sizes = {img["id"]: (img.get("height"), img.get("width")) for img in gt["images"]}
    d, rank = _detections(predictions, [sizes[i] for i in image_ids], cat_index, iou_type)
    status = np.full((len(d.key), len(IOU_THRS)), FP, dtype=np.int8)
    _match_pairs(d.key, d.shapes, g.key, g.shapes, g.ignore, g.crowd, status)
    status[(status == FP) & _outside_all(_area(d.shapes))[:, None]] = IGNORED

    image_rank = np.argsort(np.argsort(np.asarray(image_ids, dtype=np.int64), kind="stable"))
    acc = np.lexsort((rank, image_rank[d.key // n_cat], -d.score, d.key % n_cat))
    counted = g.key[~g.ignore]
    gt_count = np.bincount(counted, minlength=n_img * n_cat).reshape(n_img, n_cat)
    arrays = {"det_image": (d.key[acc] // n_cat).astype(np.int32),
              "det_cat": (d.key[acc] % n_cat).astype(np.int32),
              "det_score": d.score[acc], "det_status": status[acc],
              "gt_count": gt_count.astype(np.int32)}
    return arrays, cats


def check(arrays: dict[str, np.ndarray], n_images: int, n_cats: int) -> None:
    """ValueError unless ``match_records`` arrays fit n_images × n_cats (shapes, ranges)."""
    image, cat, status, gt = (arrays[k] for k in ("det_image", "det_cat", "det_status",
                                                  "gt_count"))
    fits = (status.shape == (len(image), len(IOU_THRS)) and cat.shape == image.shape
            and gt.shape == (n_images, n_cats) and gt.dtype.kind in "iu" and (gt >= 0).all()
            and image.dtype.kind in "iu" and cat.dtype.kind in "iu"
            and np.isin(status, (TP, FP, IGNORED)).all()
            and (not len(image) or (0 <= image.min() and image.max() < n_images
                                    and 0 <= cat[0] and cat[-1] < n_cats
                                    and (np.diff(cat) >= 0).all())))
    if not fits:
        raise ValueError(f"detection records do not fit {n_images} images × {n_cats} classes")


def _match_pairs(d_key, d_shapes, g_key, g_shapes, g_ignore, g_crowd, status) -> None:
    """IoUs of every (image, category) pair with detections and ground truth, then the
    greedy matching; writes ``status`` rows (detections in pair order, score descending)."""
    pair_keys = np.intersect1d(d_key, g_key)
    d_start, d_end = np.searchsorted(d_key, pair_keys), np.searchsorted(d_key, pair_keys, "right")
    g_start, g_end = np.searchsorted(g_key, pair_keys), np.searchsorted(g_key, pair_keys, "right")
    blocks = [np.asarray(coco_mask.iou(d_shapes[ds:de], g_shapes[gs:ge],
                                       [int(c) for c in g_crowd[gs:ge]]), dtype=np.float64).ravel()
              for ds, de, gs, ge in zip(d_start, d_end, g_start, g_end)]
    if not blocks:
        return
    n_det, n_gt = d_end - d_start, g_end - g_start
    iou_start = np.concatenate([[0], np.cumsum(n_det * n_gt)[:-1]])
    pairs = _Pairs(np.concatenate(blocks), iou_start, n_det, d_start, n_gt, g_start,
                   g_ignore, g_crowd)
    by_size = np.lexsort((-n_det, n_gt))
    while len(by_size):
        fit = np.searchsorted(np.arange(1, len(by_size) + 1) * n_gt[by_size], _PAD_BUDGET, "right")
        chunk, by_size = by_size[:max(fit, 1)], by_size[max(fit, 1):]
        pairs.match(chunk[np.argsort(-n_det[chunk], kind="stable")], status)


class _Pairs:
    """(image, category) pairs: flat IoU blocks (D×G, row-major) and ground-truth flags."""

    def __init__(self, ious, iou_start, n_det, d_start, n_gt, g_start, g_ignore, g_crowd):
        self.ious, self.iou_start, self.n_det, self.d_start = ious, iou_start, n_det, d_start
        self.n_gt, self.g_start, self.g_ignore, self.g_crowd = n_gt, g_start, g_ignore, g_crowd

    def match(self, pairs: np.ndarray, status: np.ndarray) -> None:
        """COCOeval.evaluateImg's greedy matching for ``pairs`` (most detections first), all
        IoU thresholds at once: each detection in score order takes, among the ground truth
        not yet matched (crowds always available) with IoU >= threshold, the one of highest
        IoU (the last on ties), preferring non-ignored ground truth; matched to an ignored
        one it is ignored itself."""
        n_gt = self.n_gt[pairs]
        width = int(n_gt.max())
        col = np.arange(width)
        valid = col < n_gt[:, None]
        g_idx = np.where(valid, self.g_start[pairs][:, None] + col, 0)
        ignore, crowd = self.g_ignore[g_idx] & valid, self.g_crowd[g_idx] & valid
        thr = np.minimum(IOU_THRS, 1 - 1e-10)[:, None, None]
        used = np.zeros((len(IOU_THRS), len(pairs), width), dtype=bool)
        n_det = self.n_det[pairs]
        for rank in range(int(n_det[0])):
            a = int(np.count_nonzero(n_det > rank))
            p = pairs[:a]
            cells = (self.iou_start[p] + rank * self.n_gt[p])[:, None] + col
            iou = np.where(valid[:a], self.ious[np.where(valid[:a], cells, 0)], -1.0)
            ok = (~used[:, :a] | crowd[:a]) & (iou >= thr)
            regular = ok & ~ignore[:a]
            cand = np.where(regular.any(axis=-1, keepdims=True), regular, ok)
            best = width - 1 - np.argmax(np.where(cand, iou, -np.inf)[..., ::-1], axis=-1)
            hit = cand.any(axis=-1)
            t_hit, a_hit = np.nonzero(hit)
            used[t_hit, a_hit, best[t_hit, a_hit]] = True
            on_ignored = ignore[np.arange(a), best]
            status[self.d_start[p] + rank] = np.where(
                hit, np.where(on_ignored, IGNORED, TP), FP).T
