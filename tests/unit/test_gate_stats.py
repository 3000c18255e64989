"""The gate's paired bootstrap on a fake detector (issue #14): synthetic ground truth,
boxes jittered by a known Gaussian sigma and a known share of objects missed, scored
through visiongate.bootstrap like a real model. Also: evaluation writes the records, the
gate reads them back. The rules on hand-built samples: tests/unit/test_gate_rules.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from visiongate.config import GateConfig, RobustnessConfig
from visiongate.gate_stats import GateSamples
from visiongate.gates import Check, GateResult, evaluate_gate


def _check(result: GateResult, name: str) -> Check:
    return next(c for c in result.checks if c.name == name)


# --- a fake detector on synthetic ground truth ----------------------------------------------
# Ground truth: 1-4 boxes (16-56 px) of 3 classes per 128 px image. The fake model finds
# each object with probability 1 - miss, its box corners jittered by N(0, sigma) px,
# scored by how well it fits. Two draws with the same sigma and miss are equivalent models.

METRIC, SIZE = "map50_95", 128


def _ground_truth(n_images: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "file_name": f"{i}.png", "width": SIZE, "height": SIZE})
        for _ in range(rng.integers(1, 5)):
            w, h = rng.uniform(16, 56, 2)
            x, y = rng.uniform(0, SIZE - w), rng.uniform(0, SIZE - h)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(rng.integers(1, 4)),
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    categories = [{"id": k, "name": n} for k, n in ((1, "circle"), (2, "square"), (3, "triangle"))]
    return {"images": images, "annotations": anns, "categories": categories}


def _fake_model(gt: dict, sigma: float, miss: float, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    by_image: dict[int, list[dict]] = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    out = []
    for image in gt["images"]:
        boxes, scores, labels = [], [], []
        for a in by_image.get(image["id"], []):
            if rng.random() < miss:
                continue
            x, y, w, h = a["bbox"]
            err = rng.normal(0, sigma, 4)
            boxes.append([x + err[0], y + err[1], x + w + err[2], y + h + err[3]])
            scores.append(float(np.clip(0.9 - 0.05 * np.abs(err).mean()
                                        + rng.normal(0, 0.05), 0.01, 1)))
            labels.append(a["category_id"])
        out.append({"boxes": np.array(boxes, float).reshape(-1, 4), "scores": np.array(scores),
                    "labels": np.array(labels, np.int64)})
    return out


def _records(gt: dict, predictions: list[dict]):
    from visiongate import bootstrap

    return bootstrap.detection_records(gt, [im["id"] for im in gt["images"]], predictions,
                                       "detect", 0.25)


def _point(records, names: list[str]) -> dict[str, float]:
    from visiongate import bootstrap

    identity = np.ones((1, len(records.image_ids)), dtype=np.int64)
    return {k: float(v[0]) for k, v in bootstrap.metric_samples(records, identity, names).items()}


def _gate(candidate, champion, cfg: GateConfig) -> GateResult:
    """The gate on records: one counts matrix for both, point metrics from identity counts."""
    from visiongate import bootstrap

    names = [*cfg.max_drop]
    counts = bootstrap.resample_counts(len(candidate.image_ids), cfg.resamples, cfg.seed)
    samples = GateSamples(len(candidate.image_ids),
                          bootstrap.metric_samples(candidate, counts, names),
                          bootstrap.metric_samples(champion, counts, names))
    return evaluate_gate(_point(candidate, names), _point(champion, names), cfg, samples=samples)


def _seeds(n: int = 20):
    return [(seed, _ground_truth(60, seed)) for seed in range(n)]


# 20 test splits of 60 images, the gate at its defaults (0.95, 1000 resamples), max_drop
# 0.03 on map50_95. Measured here: equivalent (sigma 2 vs 2) passed 20/20 (the point rule
# would refuse 1/20); sigma 4 vs 2 (true drop ~0.24) refused 20/20; sigma 2.5 vs 2 (true
# change -0.068 on 2,000 images) covered by the 95 % interval in 17/20 (93/100 seeds).
# The interval's half-width on 60 images is ~0.054: a drop of 0.03 is below what 60 images
# can detect, hence the small-split warning on each of these splits.
GATE = GateConfig(max_drop={METRIC: 0.03}, seed=7)
SIGMA, MISS = 2.0, 0.1


def test_equivalent_candidates_are_not_refused():
    passed = [_gate(_records(gt, _fake_model(gt, SIGMA, MISS, 100 + seed)),
                    _records(gt, _fake_model(gt, SIGMA, MISS, 200 + seed)),
                    GATE.model_copy(update={"seed": seed})).passed for seed, gt in _seeds()]
    assert sum(passed) >= 19, f"equivalent candidate refused in {20 - sum(passed)} of 20 seeds"


def test_clearly_worse_candidates_are_refused():
    refused = [not _gate(_records(gt, _fake_model(gt, 2 * SIGMA, MISS, 100 + seed)),
                         _records(gt, _fake_model(gt, SIGMA, MISS, 200 + seed)),
                         GATE.model_copy(update={"seed": seed})).passed for seed, gt in _seeds()]
    assert sum(refused) == 20, f"clearly worse candidate passed in {20 - sum(refused)} of 20 seeds"


def test_interval_covers_the_true_difference():
    big = _ground_truth(2000, 12345)
    truth = (_point(_records(big, _fake_model(big, 1.25 * SIGMA, MISS, 1)), [METRIC])[METRIC]
             - _point(_records(big, _fake_model(big, SIGMA, MISS, 2)), [METRIC])[METRIC])
    covered = []
    for seed, gt in _seeds():
        result = _gate(_records(gt, _fake_model(gt, 1.25 * SIGMA, MISS, 100 + seed)),
                       _records(gt, _fake_model(gt, SIGMA, MISS, 200 + seed)),
                       GATE.model_copy(update={"seed": seed}))
        check = _check(result, f"no-regression:{METRIC}")
        covered.append(check.low <= truth <= check.high)
    assert sum(covered) >= 17, f"true difference {truth:+.4f} covered in {sum(covered)} of 20"


def test_small_split_warning_fires_on_five_images():
    gt = _ground_truth(5, 0)
    result = _gate(_records(gt, _fake_model(gt, SIGMA, MISS, 1)),
                   _records(gt, _fake_model(gt, SIGMA, MISS, 2)), GATE)
    check = _check(result, f"no-regression:{METRIC}")
    assert check.warning.startswith("test split too small to detect a drop of 0.030")
    assert "on 5 images; about" in check.warning


def test_robustness_on_a_fake_corrupted_copy():
    from visiongate import bootstrap

    gt = _ground_truth(60, 3)
    clean = _records(gt, _fake_model(gt, SIGMA, MISS, 1))
    cfg = GateConfig(robustness=RobustnessConfig(metric="map50", corruptions={"blur": 1, "fog": 1},
                                                 max_relative_drop=0.3))
    corrupted = {"blur": _records(gt, _fake_model(gt, 1.5 * SIGMA, 0.15, 2)),   # mild
                 "fog": _records(gt, _fake_model(gt, 4 * SIGMA, 0.4, 3))}       # heavy
    counts = bootstrap.resample_counts(60, cfg.resamples, cfg.seed)
    samples = GateSamples(60, bootstrap.metric_samples(clean, counts, ["map50"]), corrupted={
        c: bootstrap.metric_samples(r, counts, ["map50"]) for c, r in corrupted.items()})
    result = evaluate_gate(_point(clean, ["map50"]), None, cfg,
                           {c: _point(r, ["map50"]) for c, r in corrupted.items()}, samples=samples)
    blur, fog = _check(result, "robust:blur"), _check(result, "robust:fog")
    assert blur.passed and blur.high < 0.3, blur.detail
    assert not fog.passed and fog.low > 0.3, fog.detail


def test_records_files_give_the_same_samples(tmp_path):
    from visiongate.errors import DataError
    from visiongate.gate_stats import RecordFiles, load_gate_samples

    gt = _ground_truth(20, 0)
    files = RecordFiles.in_dir(tmp_path, champion=True, corruptions=["blur"])
    for path, sigma in ((files.candidate, SIGMA), (files.champion, SIGMA),
                        (files.corrupted["blur"], 2 * SIGMA)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        _records(gt, _fake_model(gt, sigma, MISS, int(sigma * 10))).save(Path(path))
    cfg = GateConfig(floors={"map50": 0.1}, max_drop={METRIC: 0.03}, resamples=200,
                     robustness=RobustnessConfig(metric="map50", corruptions={"blur": 1}))
    samples = load_gate_samples(files, cfg, {"map50": 0.9, METRIC: 0.5})
    assert samples.n_images == 20 and set(samples.candidate) == {"map50", METRIC}
    assert set(samples.champion) == {METRIC} and set(samples.corrupted["blur"]) == {"map50"}
    assert samples.candidate[METRIC].shape == (200,)
    np.testing.assert_array_equal(samples.candidate[METRIC], samples.champion[METRIC])
    assert load_gate_samples(RecordFiles(str(tmp_path / "none.npz")), cfg, {}) is None

    other = _ground_truth(21, 0)
    _records(other, _fake_model(other, SIGMA, MISS, 1)).save(Path(files.champion))
    with pytest.raises(DataError, match="other test images"):
        load_gate_samples(files, cfg, {"map50": 0.9})


# --- evaluation writes the records the gate resamples ---------------------------------------

def test_evaluate_writes_records_that_reproduce_its_metrics(tmp_path, monkeypatch):
    """A fake detector (the truth, jittered, scores 0.3-0.9) through evaluate(): the saved
    records' identity resample gives the evaluator's metrics; one records file per corruption."""
    from visiongate import bootstrap, diagnostics, evaluate, models
    from visiongate.config import SynthConfig
    from visiongate.datasets.coco import load_split
    from visiongate.datasets.synth import generate

    generate(SynthConfig(image_size=64, splits={"train": 1, "val": 1, "test": 6}), tmp_path / "d")
    split_dir, ckpt = tmp_path / "d" / "test", tmp_path / "ckpt"
    models.CheckpointMeta(family="yolo", task="detect", weights="none",
                          class_names=["circle", "square", "triangle"],
                          config={"conf": 0.01, "nms_iou": 0.7, "score_threshold": 0.5}).write(ckpt)
    split = load_split(split_dir)
    truth = {split.image_path(im).name: diagnostics.gt_boxes(split.annotations[im["id"]])
             for im in split.images}

    def fake_predict(_checkpoint, paths, runtime="torch"):
        rng = np.random.default_rng(0)
        out = []
        for p in paths:
            boxes, labels = truth[Path(p).name]
            out.append({"boxes": boxes + rng.normal(0, 1.5, boxes.shape),
                        "scores": rng.uniform(0.3, 0.9, len(boxes)), "labels": labels})
        return out

    monkeypatch.setattr(models, "predict", fake_predict)
    scores = evaluate.evaluate(ckpt, split_dir, records_path=tmp_path / "r" / "candidate.npz")
    records = bootstrap.Records.load(tmp_path / "r" / "candidate.npz")
    assert records.image_ids == tuple(im["id"] for im in split.images)
    names = ["map50", "map50_95", "precision", "recall", "ap/circle"]
    identity = _point(records, names)
    for name in names:
        assert identity[name] == pytest.approx(scores[name], abs=1e-6, nan_ok=True), name

    evaluate.evaluate_corrupted(ckpt, split_dir, tmp_path / "cache", {"blur": 1, "fog": 1},
                                tmp_path / "r" / "corrupted")
    assert sorted(p.name for p in (tmp_path / "r" / "corrupted").iterdir()) == [
        "blur.npz", "fog.npz"]


def test_prefect_metrics_table_rows_carry_intervals():
    from tasks.gate import _row
    from visiongate.gate_stats import MetricInterval

    interval = MetricInterval("map50", 0.81, 0.9, -0.05, 0.02)
    assert _row("map50", 0.85, {"map50": 0.86}, interval) == {
        "metric": "map50", "value": 0.85, "low": 0.81, "high": 0.9, "champion": 0.86,
        "delta": -0.01, "delta_low": -0.05, "delta_high": 0.02}
    assert _row("map_small", math.nan, None, None) == {
        "metric": "map_small", "value": None, "low": None, "high": None}
