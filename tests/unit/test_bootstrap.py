"""Paired-bootstrap records (visiongate.bootstrap): with every image drawn once they give
the evaluator's own numbers (faster-coco-eval, diagnostics, semantic_metrics); a resample
equals evaluating the resampled images."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from visiongate import bootstrap, diagnostics, metrics, semantic
from visiongate.errors import ConfigError, DataError, NotFound
from visiongate.geometry import xywh_to_xyxy

SIZE = 64
THRESHOLD = 0.3
CLASSES = ("c1", "c2", "c3", "c7")   # c7 has no ground truth


def _detection_case(seed: int = 0, n: int = 40, ties: bool = False):
    """Jittered ground truth as predictions with random scores and class mistakes, false
    positives, an image without ground truth, crowd boxes, one image with more than 100
    detections of a class; (gt, image_ids, predictions with boxes and masks)."""
    rng = np.random.default_rng(seed)
    cats = [{"id": c, "name": f"c{c}"} for c in (1, 2, 3, 7)]
    images, anns, ids, preds = [], [], [], []
    for i in range(1, n + 1):
        image_id = 3 * i + 100 * (i % 2)     # not in split order
        images.append({"id": image_id, "width": SIZE, "height": SIZE, "file_name": f"{i}.png"})
        g = 0 if i == 5 else int(rng.integers(1, 6))
        xy, wh = rng.uniform(0, SIZE - 24, (g, 2)), rng.uniform(6, 24, (g, 2))
        labels = rng.choice([1, 2, 3], g)
        for (x, y), (w, h), c in zip(xy, wh, labels):
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(c),
                         "bbox": [x, y, w, h], "iscrowd": 0, "area": float(w * h),
                         "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
        if i % 13 == 0:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1,
                         "bbox": [0, 0, 30, 30], "iscrowd": 1, "area": 900.0,
                         "segmentation": [[0, 0, 30, 0, 30, 30, 0, 30]]})
        m = 120 if i == 7 else int(rng.integers(0, 4))
        xywh = np.vstack([np.hstack([xy + rng.normal(0, 2, (g, 2)), wh * rng.uniform(0.8, 1.2, (g, 2))]),
                          np.hstack([rng.uniform(0, SIZE - 20, (m, 2)), rng.uniform(5, 20, (m, 2))])])
        plabels = np.concatenate([np.where(rng.random(g) < 0.1, rng.choice([1, 2, 3], g), labels),
                                  np.ones(m, int) if i == 7 else rng.choice([1, 2, 3, 7], m)])
        scores = rng.uniform(0, 1, g + m)
        boxes = xywh_to_xyxy(xywh).reshape(-1, 4)
        masks = np.zeros((g + m, SIZE, SIZE), dtype=bool)
        for j, (x0, y0, x1, y1) in enumerate(np.clip(boxes, 0, SIZE).astype(int)):
            masks[j, y0:y1, x0:x1] = True
        ids.append(image_id)
        preds.append({"boxes": boxes, "scores": np.round(scores, 1) if ties else scores,
                      "labels": plabels.astype(int), "masks": masks})
    return {"images": images, "annotations": anns, "categories": cats}, ids, preds


def _operating_point(gt, ids, preds) -> dict[str, float]:
    """What evaluate reports at the operating point (diagnostics)."""
    by_image = defaultdict(list)
    for ann in gt["annotations"]:
        by_image[ann["image_id"]].append(ann)
    matches = [diagnostics.match(diagnostics.gt_boxes(by_image[i]), p, THRESHOLD)
               for i, p in zip(ids, preds)]
    cm = diagnostics.confusion(matches, [c["id"] for c in gt["categories"]])
    return diagnostics.precision_recall(cm, list(CLASSES))


def _box_names(prefix: str = "") -> list[str]:
    return [f"{prefix}{n}" for n in ("map50", "map50_95", "map75",
                                     *(f"ap/{c}" for c in CLASSES))]


def _max_delta(got: dict, expected: dict) -> float:
    deltas = [0.0 if math.isnan(got[k]) and math.isnan(expected[k]) else abs(got[k] - expected[k])
              for k in expected]
    return max(deltas)


def _once(records, names):
    samples = bootstrap.metric_samples(records, np.ones((1, len(records.image_ids)), np.int32), names)
    return {k: float(v[0]) for k, v in samples.items()}


@pytest.mark.parametrize("ties", [False, True])
def test_identity_equals_faster_coco_eval_and_diagnostics(ties):
    gt, ids, preds = _detection_case(ties=ties)
    boxes = metrics.detection_metrics(gt, ids, preds)
    masks = metrics.detection_metrics(gt, ids, preds, "segm")
    records = bootstrap.detection_records(gt, ids, preds, "instance", THRESHOLD)
    got = _once(records, _box_names() + _box_names("mask_"))
    assert _max_delta(got, {k: boxes[k] for k in _box_names()}) < 1e-6
    assert _max_delta(got, {f"mask_{k}": masks[k] for k in _box_names()}) < 1e-6
    assert math.isnan(got["ap/c7"]) and 0 < got["map50_95"] < got["map50"] < 1
    point = _operating_point(gt, ids, preds)
    got = _once(records, list(point))
    assert all(got[k] == point[k] or (math.isnan(got[k]) and math.isnan(point[k])) for k in point)


def test_resample_counts_are_seeded_draws_with_replacement():
    counts = bootstrap.resample_counts(37, 200, seed=5)
    assert counts.shape == (200, 37) and counts.dtype == np.int32
    assert (counts.sum(axis=1) == 37).all() and (counts == 0).any() and (counts > 1).any()
    assert np.array_equal(counts, bootstrap.resample_counts(37, 200, seed=5))
    assert not np.array_equal(counts, bootstrap.resample_counts(37, 200, seed=6))


def test_doubling_every_image_changes_no_metric():
    gt, ids, preds = _detection_case(seed=1)
    records = bootstrap.detection_records(gt, ids, preds, "detect", THRESHOLD)
    names = _box_names() + ["precision", "recall", "recall/c2"]
    counts = np.vstack([np.ones(len(ids), np.int32), np.full(len(ids), 2, np.int32)])
    samples = bootstrap.metric_samples(records, counts, names)
    for name in names:
        assert samples[name][1] == pytest.approx(samples[name][0], abs=1e-6, nan_ok=True), name


def test_leaving_an_image_out_equals_evaluating_without_it():
    gt, ids, preds = _detection_case(seed=2)
    records = bootstrap.detection_records(gt, ids, preds, "detect", THRESHOLD)
    counts = np.ones((3, len(ids)), np.int32)
    dropped = [0, 6, 12]     # one image each row; image 12's id has a crowd box
    counts[np.arange(3), dropped] = 0
    point_names = ["precision", "recall", "precision/c1", "recall/c3"]
    samples = bootstrap.metric_samples(records, counts, _box_names() + point_names)
    for row, j in enumerate(dropped):
        keep = [n for n in range(len(ids)) if n != j]
        sub_gt = dict(gt, images=[im for im in gt["images"] if im["id"] != ids[j]])
        sub_ids, sub_preds = [ids[n] for n in keep], [preds[n] for n in keep]
        expected = metrics.detection_metrics(sub_gt, sub_ids, sub_preds)
        got = {k: float(v[row]) for k, v in samples.items()}
        assert _max_delta(got, {k: expected[k] for k in _box_names()}) < 1e-6
        point = _operating_point(sub_gt, sub_ids, sub_preds)
        assert all(got[k] == point[k] for k in point_names)


def _semantic_case(n: int = 12, seed: int = 0):
    """Label maps over 5 values; value 4 appears nowhere, value 3 only in image 2."""
    rng = np.random.default_rng(seed)
    targets = [rng.integers(0, 3, (16, 16)).astype(np.uint8) for _ in range(n)]
    preds = [np.where(rng.random((16, 16)) < 0.7, t, rng.integers(0, 3, (16, 16))).astype(np.uint8)
             for t in targets]
    preds[2][0, :5] = 3
    return preds, targets, ["background", "a", "b", "c", "d"]


def test_semantic_identity_scaling_and_dropping_are_exact():
    preds, targets, names = _semantic_case()
    records = bootstrap.semantic_records(preds, targets, names)
    metric_names = ["miou", "dice", "pixel_acc", *(f"iou/{c}" for c in names)]
    counts = np.ones((4, len(preds)), np.int32)
    counts[1] = 2
    counts[2, 2] = 0     # class "c" disappears: NaN, out of the means
    counts[3, 5] = 0
    samples = bootstrap.metric_samples(records, counts, metric_names)
    full = semantic.semantic_metrics(preds, targets, names)
    for row, expected in [(0, full), (1, full),
                          (2, semantic.semantic_metrics(preds[:2] + preds[3:], targets[:2] + targets[3:], names)),
                          (3, semantic.semantic_metrics(preds[:5] + preds[6:], targets[:5] + targets[6:], names))]:
        got = {k: float(v[row]) for k, v in samples.items()}
        for k in metric_names:
            assert got[k] == expected[k] or (math.isnan(got[k]) and math.isnan(expected[k])), (row, k)
    assert math.isnan(samples["iou/c"][2]) and math.isnan(samples["iou/d"][0])


def test_records_round_trip_and_refuse_bad_files(tmp_path):
    gt, ids, preds = _detection_case(seed=3, n=10)
    records = bootstrap.detection_records(gt, ids, preds, "detect", THRESHOLD)
    path = records.save(tmp_path / "sub" / "candidate.npz")
    assert path == tmp_path / "sub" / "candidate.npz"
    loaded = bootstrap.Records.load(path)
    assert loaded.kind == "detect" and loaded.image_ids == tuple(ids)
    assert set(loaded.arrays) == set(records.arrays)
    assert all(np.array_equal(loaded.arrays[k], records.arrays[k]) for k in records.arrays)
    counts = bootstrap.resample_counts(len(ids), 20, seed=0)
    assert np.array_equal(bootstrap.metric_samples(loaded, counts, ["map50"])["map50"],
                          bootstrap.metric_samples(records, counts, ["map50"])["map50"],
                          equal_nan=True)
    with pytest.raises(NotFound):
        bootstrap.Records.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError):
        bootstrap.Records.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "pickled.npz", kind=np.array("detect"), image_ids=np.arange(3),
             **{"a:class_names": np.array([object()], dtype=object)})
    with pytest.raises(DataError):
        bootstrap.Records.load(tmp_path / "pickled.npz")
    bad = dict(records.arrays, **{"box.det_image": records.arrays["box.det_image"] + 99})
    bootstrap.Records("detect", records.image_ids, bad).save(tmp_path / "bad.npz")
    with pytest.raises(DataError, match="do not fit"):
        bootstrap.Records.load(tmp_path / "bad.npz")


def test_unsupported_names_are_config_errors():
    preds, targets, names = _semantic_case(n=3)
    records = bootstrap.semantic_records(preds, targets, names)
    assert records.image_ids == (0, 1, 2)
    assert bootstrap.semantic_records(preds, targets, names, [7, 9, 8]).image_ids == (7, 9, 8)
    counts = np.ones((1, 3), np.int32)
    assert bootstrap.is_supported("detect", "ap/anything") and bootstrap.is_supported("segment", "miou")
    assert not bootstrap.is_supported("detect", "map_small") and not bootstrap.is_supported("detect", "mar100")
    assert "mask_ap/" in bootstrap.supported("instance") and "mask_precision" not in bootstrap.supported("instance")
    with pytest.raises(ConfigError, match="map50"):
        bootstrap.metric_samples(records, counts, ["map50"])
    with pytest.raises(ConfigError, match="no class"):
        bootstrap.metric_samples(records, counts, ["iou/zebra"])
