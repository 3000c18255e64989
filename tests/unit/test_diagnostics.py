"""Operating-point diagnostics: post-processing, matching, confusion matrix, precision/recall,
and evaluate() with a fake detector writing the report's plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visiongate import diagnostics, evaluate, models
from visiongate.config import SynthConfig
from visiongate.datasets.coco import load_split
from visiongate.datasets.synth import generate


def _pred(boxes, scores, labels) -> dict:
    return {"boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4),
            "scores": np.array(scores, dtype=np.float32), "labels": np.array(labels)}


def test_postprocess_threshold_and_nms_modes():
    # two heavily overlapping boxes of different classes, one low-score box elsewhere
    pred = _pred([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], [0.9, 0.8, 0.05], [1, 2, 1])
    per_class = diagnostics.postprocess(pred, conf=0.1, nms_iou=0.5, class_agnostic=False)
    assert per_class["scores"].tolist() == pytest.approx([0.9, 0.8])  # classes differ: both kept
    agnostic = diagnostics.postprocess(pred, conf=0.1, nms_iou=0.5, class_agnostic=True)
    assert agnostic["labels"].tolist() == [1]            # IoU 81/119 = 0.68 > 0.5 suppresses
    assert diagnostics.postprocess(pred, 0.95, 0.5, False)["boxes"].shape == (0, 4)


def test_match_confusion_precision_recall_by_hand():
    # truth: a circle (1) and a square (2); detections: the circle right, the square called
    # a circle, one false positive, one detection below the threshold (ignored)
    gt = (np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=float), np.array([1, 2]))
    pred = _pred([[0, 0, 10, 10], [21, 21, 31, 31], [60, 60, 70, 70], [40, 40, 50, 50]],
                 [0.9, 0.8, 0.7, 0.1], [1, 1, 2, 2])
    m = diagnostics.match(gt, pred, threshold=0.25)
    assert m.gt_match.tolist() == [0, 1] and m.det_match.tolist() == [0, 1, -1]
    assert m.errors == 2                                  # one wrong class + one false positive
    cm = diagnostics.confusion([m], [1, 2])
    assert cm.tolist() == [[0, 0, 1],                     # background row: FP predicted square
                           [0, 1, 0],                     # circle -> circle
                           [0, 1, 0]]                     # square -> circle (confusion)
    pr = diagnostics.precision_recall(cm, ["circle", "square"])
    assert pr["precision"] == pytest.approx(1 / 3) and pr["recall"] == pytest.approx(1 / 2)
    assert pr["precision/circle"] == pytest.approx(1 / 2) and pr["recall/circle"] == 1.0
    assert pr["precision/square"] == 0.0 and pr["recall/square"] == 0.0
    missed = diagnostics.match(gt, _pred([], [], []), 0.25)
    assert missed.errors == 2 and diagnostics.confusion([missed], [1, 2])[1:, 0].tolist() == [1, 1]
    assert math.isnan(diagnostics.precision_recall(diagnostics.confusion([missed], [1, 2]),
                                                   ["circle", "square"])["precision"])


def test_worst_orders_by_errors_then_index():
    assert diagnostics.worst([0, 3, 1, 3], 2) == [1, 3]
    assert diagnostics.worst([0.9, 0.2, 0.5], 2, highest=False) == [1, 2]


@pytest.fixture
def split_and_checkpoint(tmp_path: Path):
    generate(SynthConfig(image_size=64, splits={"train": 1, "val": 1, "test": 6}), tmp_path / "d")
    ckpt = tmp_path / "ckpt"
    models.CheckpointMeta(family="yolo", task="detect", weights="none",
                          class_names=["circle", "square", "triangle"],
                          config={"conf": 0.01, "nms_iou": 0.7, "score_threshold": 0.5}).write(ckpt)
    return tmp_path / "d" / "test", ckpt


def test_evaluate_with_a_fake_detector_writes_plots(split_and_checkpoint, tmp_path, monkeypatch):
    """Fake model: the ground truth (score 0.9) plus one false positive per image (0.6)."""
    split_dir, ckpt = split_and_checkpoint
    split = load_split(split_dir)
    truth = {split.image_path(im): diagnostics.gt_boxes(split.annotations[im["id"]])
             for im in split.images}

    def fake_predict(_checkpoint, paths, runtime="torch"):
        out = []
        for p in paths:
            boxes, labels = truth[Path(p)]
            out.append(_pred([*boxes.tolist(), [0, 0, 3, 3]], [0.9] * len(boxes) + [0.6],
                             [*labels.tolist(), 1]))
        return out

    monkeypatch.setattr(models, "predict", fake_predict)
    scores = evaluate.evaluate(ckpt, split_dir, tmp_path / "plots")
    n_objects = sum(len(b) for b, _ in truth.values())
    assert scores["map50"] == pytest.approx(1.0)        # every FP scores below every true box
    assert scores["recall"] == pytest.approx(1.0)
    assert scores["precision"] == pytest.approx(n_objects / (n_objects + len(truth)))
    for name in ("pr_curves.png", "confusion_matrix.png", "worst_images.png"):
        with Image.open(tmp_path / "plots" / name) as image:
            assert image.size[0] > 100
    json.dumps(scores)                                   # plain floats for MLflow and Prefect
