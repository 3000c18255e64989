"""The serving wire format: records, RLE masks, unreadable inputs, COCO output, overlays.

A fake predictor returns fixed predictions: these tests are about the format, not a model.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from visiongate import batch_predict, serving
from visiongate.models import CheckpointMeta

DETECT = CheckpointMeta(family="fake", task="detect", class_names=("circle", "square"),
                        weights="none")
SEGMENT = CheckpointMeta(family="fake", task="segment", class_names=("circle", "square"),
                         weights="none")


def _png(size=(40, 30), colour=(10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _detections(masks: bool = False) -> dict:
    out = {"boxes": np.array([[1, 2, 11, 22], [5, 5, 9, 9]], np.float32),
           "scores": np.array([0.9, 0.1], np.float32), "labels": np.array([2, 1])}
    if masks:
        m = np.zeros((2, 30, 40), bool)
        m[0, 2:22, 1:11] = True
        m[1, 5:9, 5:9] = True
        out["masks"] = m
    return out


def test_detection_record_keeps_scores_above_min_score_with_class_names():
    record = serving.to_record(DETECT, _detections(), (40, 30), min_score=0.25)
    assert record == {"width": 40, "height": 30, "detections": [
        {"box": [1.0, 2.0, 11.0, 22.0], "score": 0.9, "label": 2, "class_name": "square"}]}
    json.dumps(record)  # JSON-friendly: numpy types would raise here
    assert len(serving.to_record(DETECT, _detections(), (40, 30), 0.0)["detections"]) == 2


def test_instance_record_masks_are_coco_rle_that_decode_back():
    prediction = _detections(masks=True)
    record = serving.to_record(DETECT, prediction, (40, 30), 0.0)
    for det, mask in zip(record["detections"], prediction["masks"]):
        rle = {**det["mask"], "counts": det["mask"]["counts"].encode()}
        assert det["mask"]["size"] == [30, 40]
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), mask)


def test_semantic_record_lists_each_class_present_without_background():
    label_map = np.zeros((30, 40), np.uint8)
    label_map[:10, :10] = 2  # 100 px of square
    label_map[20:, 30:] = 1  # 100 px of circle
    record = serving.to_record(SEGMENT, label_map, (40, 30), 0.25)
    assert [(s["label"], s["class_name"], s["pixels"]) for s in record["segments"]] == [
        (1, "circle", 100), (2, "square", 100)]
    square = record["segments"][1]["mask"]
    decoded = mask_utils.decode({**square, "counts": square["counts"].encode()})
    np.testing.assert_array_equal(decoded.astype(bool), label_map == 2)


def test_unreadable_cells_get_an_error_record_and_the_rest_are_predicted():
    seen = []

    def fake_predict(paths):
        seen.extend(paths)
        return [_detections() for _ in paths]

    good = base64.b64encode(_png()).decode()
    truncated = base64.b64encode(_png()[:60]).decode()
    records = serving.predict_cells(fake_predict, DETECT, [good, "not base64!", truncated, good],
                                    min_score=0.5)
    assert len(seen) == 2 and all(p.suffix == ".png" for p in seen)
    assert records[0] == records[3] and records[0]["width"] == 40
    assert "not base64" in records[1]["error"]
    assert records[2]["error"].startswith("image 2: not a readable image")


def test_pyfunc_model_requires_the_image_column():
    model = serving.VisionModel.__new__(serving.VisionModel)  # no weights to load
    model.meta = SEGMENT
    model.predict_images = lambda paths: [np.ones((30, 40), np.uint8)] * len(paths)
    with pytest.raises(ValueError, match="column 'image'"):
        model.predict(pd.DataFrame({"img": ["x"]}))
    out = model.predict(pd.DataFrame({"image": [base64.b64encode(_png()).decode()]}))
    assert out[0]["segments"][0]["pixels"] == 30 * 40


def test_predict_folder_writes_coco_predictions_overlays_and_skipped(tmp_path: Path, monkeypatch):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    (images / "a.png").write_bytes(_png())
    Image.new("RGB", (40, 30)).save(images / "sub" / "b.jpg")
    (images / "notes.txt").write_text("not an image")
    (images / "broken.png").write_bytes(_png()[:50])
    checkpoint = tmp_path / "ckpt"
    DETECT.write(checkpoint)
    monkeypatch.setattr(serving, "predictor",
                        lambda ckpt: lambda paths: [_detections()] * len(paths))

    result = batch_predict.predict_folder(checkpoint, images, tmp_path / "out", 0.25, "fake/1")

    assert result["predicted"] == 2 and result["detections"] == 2
    assert sorted(f for f, _ in result["skipped"]) == ["broken.png", "notes.txt"]
    coco = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["a.png", "sub/b.jpg"]
    assert coco["categories"] == [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}]
    first = coco["annotations"][0]
    assert first["bbox"] == [1.0, 2.0, 10.0, 20.0] and first["category_id"] == 2
    assert first["score"] == pytest.approx(0.9)
    skipped = (tmp_path / "out" / "skipped.csv").read_text().splitlines()
    assert skipped[0] == "file,reason" and len(skipped) == 3
    overlays = sorted(p.name for p in (tmp_path / "out" / "overlays").iterdir())
    assert overlays == ["a.png", "sub__b.jpg.png"]
    drawn = np.asarray(Image.open(tmp_path / "out" / "overlays" / "a.png"))
    assert (drawn != np.asarray(Image.open(images / "a.png"))).any(), "nothing drawn"
