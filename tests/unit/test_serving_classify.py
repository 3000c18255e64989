"""A classifier's answer: top-k by probability, and labels — the top-1 only when it is sure
enough (single-label), every class over its own threshold (multi-label)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from visiongate import batch_predict, serving
from visiongate.models import CheckpointMeta

NAMES = ("circle", "square", "triangle", "star", "ellipse", "cross")


def _meta(task: str, **extra) -> CheckpointMeta:
    return CheckpointMeta(family="fake", task=task, class_names=NAMES, weights="none", **extra)


def _names(entries: list[dict]) -> list[str]:
    return [e["class_name"] for e in entries]


def test_top_k_is_the_five_most_probable_classes_in_order_with_category_ids():
    probs = np.array([0.05, 0.6, 0.2, 0.01, 0.1, 0.04], np.float32)
    record = serving.to_record(_meta("classify", config={"min_score": 0.5}), probs, (8, 6), None)
    assert record["width"] == 8 and record["height"] == 6
    assert _names(record["top_k"]) == ["square", "triangle", "ellipse", "circle", "cross"]
    assert [e["label"] for e in record["top_k"]] == [2, 3, 5, 1, 6]
    assert record["top_k"][0]["score"] == 0.6
    assert _names(record["labels"]) == ["square"]


def test_single_label_rejects_an_uncertain_top_1():
    probs = np.array([0.3, 0.45, 0.25, 0, 0, 0], np.float32)
    meta = _meta("classify", config={"min_score": 0.5})
    assert serving.to_record(meta, probs, (8, 6), None)["labels"] == []       # 0.45 < 0.5
    assert _names(serving.to_record(meta, probs, (8, 6), 0.4)["labels"]) == ["square"]
    assert serving.to_record(meta, probs, (8, 6), 0.9)["labels"] == []


def test_multi_label_uses_each_class_threshold_and_a_request_min_score_replaces_them():
    probs = np.array([0.7, 0.3, 0.2, 0.9, 0.05, 0.5], np.float32)
    meta = _meta("multilabel", thresholds=(0.8, 0.25, 0.5, 0.5, 0.01, 0.6))
    record = serving.to_record(meta, probs, (8, 6), None)
    assert _names(record["labels"]) == ["star", "square", "ellipse"]        # by probability
    assert _names(serving.to_record(meta, probs, (8, 6), 0.5)["labels"]) == \
        ["star", "circle", "cross"]


def test_the_pyfunc_answers_classification_rows_and_refuses_a_bad_min_score(tmp_path: Path,
                                                                           monkeypatch):
    import base64
    import io

    import pytest

    from visiongate.errors import DataError

    checkpoint = tmp_path / "ckpt"
    _meta("classify", config={"min_score": 0.5}).write(checkpoint)
    monkeypatch.setattr(serving, "predictor", lambda ckpt: lambda paths: [
        np.array([0.1, 0.8, 0.1, 0, 0, 0], np.float32)] * len(paths))
    model = serving.VisionModel(checkpoint)
    buf = io.BytesIO()
    Image.new("RGB", (12, 10)).save(buf, format="PNG")
    cell = base64.b64encode(buf.getvalue()).decode()
    out = model.predict(pd.DataFrame({"image": [cell, "not base64!"]}))
    assert _names(out[0]["labels"]) == ["square"] and out[1]["reason"] == "not_base64"
    with pytest.raises(DataError, match="min_score"):
        model.predict(pd.DataFrame({"image": [cell]}), params={"min_score": 2})


def test_batch_prediction_of_a_classifier_writes_a_csv_and_captioned_overlays(tmp_path: Path,
                                                                            monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (40, 30)).save(images / name)
    (images / "notes.txt").write_text("not an image")
    checkpoint = tmp_path / "ckpt"
    _meta("classify", config={"min_score": 0.5}).write(checkpoint)
    answers = iter([np.array([0.1, 0.8, 0.1, 0, 0, 0]), np.array([0.4, 0.3, 0.3, 0, 0, 0])])
    monkeypatch.setattr(serving, "predictor", lambda ckpt: lambda paths: [
        next(answers) for _ in paths])

    result = batch_predict.predict_folder(checkpoint, images, tmp_path / "out", None, "fake/1")

    assert result["predicted"] == 2 and [s[0] for s in result["skipped"]] == ["notes.txt"]
    rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
    assert [(r["file"], r["labels"], r["score"]) for r in rows] == [
        ("a.png", "square", "0.80000"), ("b.png", "", "0.40000")]   # b: uncertain, rejected
    assert rows[0]["top_k"].startswith("square:0.80000;circle:0.10000")
    assert len(list((tmp_path / "out" / "overlays").glob("*.png"))) == 2
    assert not (tmp_path / "out" / "predictions.json").exists()
