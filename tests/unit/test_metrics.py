"""Metrics against the seeds' worked examples, hand-computed cases and direct pycocotools."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from visiongate.metrics import COCO_STAT_NAMES, box_iou, detection_metrics, nms
from visiongate.semantic import semantic_metrics, soft_dice

CATEGORIES = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"},
              {"id": 3, "name": "triangle"}]


# --- IoU / NMS / Dice: the seeds' worked examples ------------------------------------

@pytest.mark.parametrize("a, b, expected", [
    ((0, 0, 10, 10), (1, 1, 11, 11), 81 / 119),
    ((30, 30, 100, 100), (50, 50, 120, 120), 2500 / 7300),
    ((50, 50, 150, 150), (100, 100, 200, 200), 2500 / 17500),
])
def test_box_iou_seed_examples(a, b, expected):
    assert box_iou(a, b) == pytest.approx(expected, abs=1e-12)
    assert box_iou(b, a) == pytest.approx(expected, abs=1e-12)


def test_box_iou_disjoint_and_identical():
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert box_iou((5, 5, 15, 25), (5, 5, 15, 25)) == 1.0


# The seeds' NMS walk-through: 100 px squares placed to give the stated IoUs.
NMS_BOXES = {
    "A": (0, 0, 100, 100),
    "B": (11, 0, 111, 100),     # IoU(A,B) = 89/111  ~ 0.80
    "C": (67, 0, 167, 100),     # IoU(A,C) = 33/167  ~ 0.20
    "D": (18, 0, 118, 100),     # IoU(A,D) = 82/118  ~ 0.70
    "E": (45, 67, 145, 167),    # IoU(A,E) ~ 0.10, IoU(C,E) ~ 0.15
}
NMS_SCORES = {"A": 0.95, "B": 0.90, "C": 0.80, "D": 0.75, "E": 0.70}


@pytest.mark.parametrize("pair, expected", [
    ("AB", 0.8), ("AC", 0.2), ("AD", 0.7), ("AE", 0.1), ("CE", 0.15),
])
def test_nms_walkthrough_geometry(pair, expected):
    assert box_iou(NMS_BOXES[pair[0]], NMS_BOXES[pair[1]]) == pytest.approx(expected, abs=0.02)


def test_nms_walkthrough_keeps_a_c_e():
    names = list(NMS_BOXES)
    boxes = np.array([NMS_BOXES[n] for n in names], dtype=np.float32)
    scores = np.array([NMS_SCORES[n] for n in names], dtype=np.float32)
    keep = nms(boxes, scores, 0.5)
    assert [names[i] for i in keep] == ["A", "C", "E"]
    assert keep.dtype == np.int64


def test_nms_class_aware_only_suppresses_same_label():
    names = list(NMS_BOXES)
    boxes = np.array([NMS_BOXES[n] for n in names])
    scores = np.array([NMS_SCORES[n] for n in names])
    labels = np.array([1, 2, 1, 1, 1])          # B is another class: A cannot drop it
    keep = nms(boxes, scores, 0.5, labels=labels)
    assert sorted(names[i] for i in keep) == ["A", "B", "C", "E"]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_soft_dice_seed_2x2():
    target = np.array([[1, 0], [0, 0]])
    probs = np.array([[0.9, 0.2], [0.1, 0.3]])
    assert soft_dice(probs, target) == pytest.approx(0.72, abs=1e-12)
    assert soft_dice(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    assert soft_dice(probs, target, eps=1.0) == pytest.approx(2.8 / 3.5)


# --- detection_metrics ----------------------------------------------------------------

def _gt(boxes_per_image: list[list[tuple[int, tuple]]]) -> dict:
    """COCO dict from [[(category_id, (x, y, w, h)), ...] per image]; image ids from 1."""
    images, anns = [], []
    for image_id, boxes in enumerate(boxes_per_image, start=1):
        images.append({"id": image_id, "file_name": f"{image_id}.png",
                       "width": 640, "height": 640})
        for cat, (x, y, w, h) in boxes:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat,
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    return {"images": images, "annotations": anns, "categories": CATEGORIES}


def _pred(boxes_xyxy, scores, labels) -> dict:
    return {"boxes": np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4),
            "scores": np.asarray(scores, dtype=np.float32), "labels": np.asarray(labels)}


def _random_gt(rng: np.random.Generator, n_images: int) -> dict:
    per_image = []
    for _ in range(n_images):
        boxes = []
        for _ in range(rng.integers(1, 6)):
            w, h = rng.uniform(8, 200, size=2)
            x, y = rng.uniform(0, 400, size=2)
            boxes.append((int(rng.integers(1, 4)), (float(x), float(y), float(w), float(h))))
        per_image.append(boxes)
    return _gt(per_image)


def _perfect_predictions(gt: dict) -> tuple[list[int], list[dict]]:
    ids = [img["id"] for img in gt["images"]]
    preds = []
    for image_id in ids:
        anns = [a for a in gt["annotations"] if a["image_id"] == image_id]
        boxes = [(x, y, x + w, y + h) for x, y, w, h in (a["bbox"] for a in anns)]
        preds.append(_pred(boxes, [1.0] * len(anns), [a["category_id"] for a in anns]))
    return ids, preds


def test_detection_perfect_predictions_score_one():
    gt = _random_gt(np.random.default_rng(0), 6)
    ids, preds = _perfect_predictions(gt)
    m = detection_metrics(gt, ids, preds)
    assert m["map50"] == pytest.approx(1.0)
    assert m["map50_95"] == pytest.approx(1.0)
    assert m["mar100"] == pytest.approx(1.0)
    assert all(m[f"ap/{c['name']}"] == pytest.approx(1.0) for c in CATEGORIES)
    assert set(COCO_STAT_NAMES) <= set(m)


def test_detection_single_box_hand_checked():
    # GT 100x100 (area 10000 > 96^2: "large"); prediction shifted 23 px: IoU 77/123 = 0.626,
    # a match at IoU thresholds .50, .55, .60 only -> AP 1 at 3 of 10 thresholds.
    gt = _gt([[(1, (0, 0, 100, 100))]])
    m = detection_metrics(gt, [1], [_pred([(23, 0, 123, 100)], [0.9], [1])])
    assert m["map50"] == pytest.approx(1.0)
    assert m["map75"] == pytest.approx(0.0)
    assert m["map50_95"] == pytest.approx(0.3)
    assert m["map_large"] == pytest.approx(0.3)
    assert m["ap/circle"] == pytest.approx(0.3)
    # No small/medium objects and no squares/triangles: undefined -> NaN, never -1.
    assert math.isnan(m["map_small"]) and math.isnan(m["map_medium"])
    assert math.isnan(m["ap/square"]) and math.isnan(m["ap/triangle"])
    assert all(v >= 0 for v in m.values() if not math.isnan(v))


def test_detection_no_predictions_gives_zeros():
    gt = _random_gt(np.random.default_rng(1), 4)
    ids = [img["id"] for img in gt["images"]]
    empty = [_pred(np.zeros((0, 4)), [], []) for _ in ids]
    m = detection_metrics(gt, ids, empty)
    for key in ("map50_95", "map50", "map75", "mar100"):
        assert m[key] == 0.0
    assert all(v == 0.0 or math.isnan(v) for v in m.values())


def test_detection_fills_missing_fields_and_zero_ids():
    # Annotation id 0 means "unmatched" inside COCOeval; area/iscrowd are optional here.
    gt = _gt([[(1, (10, 10, 50, 50)), (2, (100, 100, 40, 40))]])
    for i, ann in enumerate(gt["annotations"]):
        ann["id"] = i
        del ann["area"], ann["iscrowd"]
    ids, preds = _perfect_predictions(gt)
    assert detection_metrics(gt, ids, preds)["map50_95"] == pytest.approx(1.0)
    assert [a["id"] for a in gt["annotations"]] == [0, 1]      # the input is not modified
    assert all("area" not in a for a in gt["annotations"])


def test_detection_rejects_bad_input():
    gt = _gt([[(1, (0, 0, 10, 10))]])
    with pytest.raises(ValueError, match="not in the ground truth"):
        detection_metrics(gt, [99], [_pred([(0, 0, 10, 10)], [1.0], [1])])
    with pytest.raises(ValueError, match="predictions"):
        detection_metrics(gt, [1], [])
    with pytest.raises(ValueError, match="iou_type"):
        detection_metrics(gt, [1], [_pred([(0, 0, 10, 10)], [1.0], [1])], iou_type="keypoints")
    with pytest.raises(ValueError, match="masks"):
        detection_metrics(gt, [1], [_pred([(0, 0, 10, 10)], [1.0], [1])], iou_type="segm")


def _noisy_predictions(gt: dict, rng: np.random.Generator) -> tuple[list[int], list[dict]]:
    """Jittered GT boxes (some with the wrong class) plus random false positives."""
    ids, preds = [], []
    for img in gt["images"]:
        boxes, scores, labels = [], [], []
        for a in (a for a in gt["annotations"] if a["image_id"] == img["id"]):
            if rng.random() < 0.15:
                continue                                 # a miss
            scale = np.tile(a["bbox"][2:], 2)            # w, h, w, h
            x, y, w, h = np.asarray(a["bbox"]) + rng.normal(0, 0.12, 4) * scale
            boxes.append((x, y, x + abs(w), y + abs(h)))
            labels.append(a["category_id"] if rng.random() > 0.1 else int(rng.integers(1, 4)))
            scores.append(rng.uniform(0.3, 1.0))
        for _ in range(rng.integers(0, 4)):
            x, y = rng.uniform(0, 500, 2)
            w, h = rng.uniform(5, 120, 2)
            boxes.append((x, y, x + w, y + h))
            labels.append(int(rng.integers(1, 4)))
            scores.append(rng.uniform(0.0, 0.8))
        ids.append(img["id"])
        preds.append(_pred(boxes, scores, labels))
    return ids, preds


def _direct_cocoeval(gt: dict, results: list[dict], cat_ids: list[int] | None = None):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="bbox")
        if cat_ids is not None:
            evaluator.params.catIds = cat_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def test_detection_matches_direct_pycocotools():
    rng = np.random.default_rng(1234)
    gt = _random_gt(rng, 12)
    ids, preds = _noisy_predictions(gt, rng)
    results = [{"image_id": i, "category_id": int(c), "score": float(s),
                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
               for i, p in zip(ids, preds)
               for b, s, c in zip(p["boxes"], p["scores"], p["labels"])]
    m = detection_metrics(gt, ids, preds)
    stats = _direct_cocoeval(gt, results)
    assert 0.1 < m["map50"] < 0.99                      # a non-trivial case
    for name, value in zip(COCO_STAT_NAMES, stats):
        expected = float("nan") if value < 0 else value
        assert m[name] == pytest.approx(expected, abs=1e-4, nan_ok=True), name
    for cat in CATEGORIES:
        per_class = _direct_cocoeval(gt, results, cat_ids=[cat["id"]])[0]
        assert m[f"ap/{cat['name']}"] == pytest.approx(per_class, abs=1e-4), cat["name"]


# --- semantic_metrics -----------------------------------------------------------------

NAMES = ["background", "circle", "square", "triangle"]


def test_semantic_hand_computed():
    targets = [np.array([[0, 1], [1, 1]], np.uint8), np.array([[0, 0], [2, 2]], np.uint8)]
    preds = [np.array([[0, 1], [0, 1]], np.uint8), np.array([[0, 2], [2, 2]], np.uint8)]
    # Confusion (target, pred): (0,0)x2 (0,2)x1 (1,0)x1 (1,1)x2 (2,2)x2.
    # background: TP 2, union 4 -> IoU 1/2, Dice 4/6; circle: TP 2, union 3 -> 2/3, 4/5;
    # square: TP 2, union 3 -> 2/3, 4/5; triangle absent everywhere -> NaN, not averaged.
    m = semantic_metrics(preds, targets, NAMES)
    assert m["iou/background"] == pytest.approx(0.5)
    assert m["iou/circle"] == pytest.approx(2 / 3)
    assert m["iou/square"] == pytest.approx(2 / 3)
    assert math.isnan(m["iou/triangle"])
    assert m["miou"] == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    assert m["dice"] == pytest.approx((4 / 6 + 0.8 + 0.8) / 3)
    assert m["pixel_acc"] == pytest.approx(6 / 8)


def test_semantic_class_only_in_predictions_counts_as_zero():
    target = np.zeros((4, 4), np.uint8)
    pred = target.copy()
    pred[0, 0] = 3
    m = semantic_metrics([pred], [target], NAMES)
    assert m["iou/triangle"] == 0.0
    assert m["iou/background"] == pytest.approx(15 / 16)
    assert m["miou"] == pytest.approx((15 / 16 + 0.0) / 2)
    assert m["pixel_acc"] == pytest.approx(15 / 16)


def test_semantic_perfect_and_bad_labels():
    target = np.array([[0, 1, 2, 3]], np.uint8)
    m = semantic_metrics([target], [target], NAMES)
    assert m["miou"] == 1.0 and m["dice"] == 1.0 and m["pixel_acc"] == 1.0
    with pytest.raises(ValueError, match="out of range"):
        semantic_metrics([target + 1], [target], NAMES)
    with pytest.raises(ValueError, match="shape"):
        semantic_metrics([target[:, :2]], [target], NAMES)
