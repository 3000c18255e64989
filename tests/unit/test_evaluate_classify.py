"""Scoring a classifier on a split (visiongate.evaluate_classify): from fixed predictions on
a tiny synthetic split — metrics, bootstrap records and the report's PNGs; which images a
single-label evaluation scores; evaluate / evaluate_corrupted dispatching to it."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from visiongate import bootstrap, evaluate, evaluate_classify
from visiongate.classify_metrics import classification_metrics
from visiongate.config import SynthConfig
from visiongate.datasets.coco import load_split
from visiongate.datasets.synth import generate
from visiongate.errors import DataError

CLASSES = ("circle", "square", "triangle")


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate(SynthConfig(seed=7, image_size=48, classes=CLASSES, splits={"test": 12},
                         objects_per_image=(1, 3)), root)
    return root / "test"


def _fake_probs(targets: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """Mostly right, sometimes confidently wrong: one float32 (K,) vector per image."""
    rng = np.random.default_rng(seed)
    k = len(CLASSES)
    if targets.ndim == 2:     # multi-label: sigmoids leaning to the truth
        return list(np.clip(0.6 * targets + 0.5 * rng.random(targets.shape), 0, 1)
                    .astype(np.float32))
    probs = rng.dirichlet(np.ones(k), len(targets))
    probs[np.arange(len(targets)), targets] += rng.choice([0.0, 2.0], len(targets), p=[0.3, 0.7])
    return list((probs / probs.sum(axis=1, keepdims=True)).astype(np.float32))


def test_single_label_metrics_records_and_plots(split_dir, tmp_path):
    split = load_split(split_dir)
    images, targets = evaluate_classify.scored_images(split, multi_label=False)
    assert len(images) == 12 and targets.dtype == np.int64   # every synthetic image: its largest shape
    probs = _fake_probs(targets)
    scores = evaluate_classify.score_classification(
        split, images, targets, probs, False, plots_dir=tmp_path / "plots",
        records_path=tmp_path / "records.npz")
    expected = classification_metrics(np.stack(probs), targets, CLASSES, False)
    assert scores == {**expected, "images_scored": 12.0}
    assert 0 < scores["accuracy"] < 1      # the fake makes mistakes: the gallery has some
    for png in ("confusion_matrix.png", "reliability.png", "confident_mistakes.png"):
        assert (tmp_path / "plots" / png).stat().st_size > 1000, png
    records = bootstrap.Records.load(tmp_path / "records.npz")
    assert records.kind == "classify" and records.image_ids == tuple(im["id"] for im in images)
    samples = bootstrap.metric_samples(records, np.ones((1, 12), np.int32),
                                       ["accuracy", "f1_macro", "recall/square"])
    for name, values in samples.items():
        assert values[0] == pytest.approx(scores[name], abs=1e-9)


def test_multilabel_metrics_records_and_plots(split_dir, tmp_path):
    split = load_split(split_dir)
    images, targets = evaluate_classify.scored_images(split, multi_label=True)
    assert targets.shape == (12, 3) and targets.dtype == bool and targets.any(axis=1).all()
    assert (targets.sum(axis=1) > 1).any()          # several shapes in some images
    probs, thresholds = _fake_probs(targets), (0.4, 0.5, 0.6)
    scores = evaluate_classify.score_classification(
        split, images, targets, probs, True, thresholds, tmp_path / "plots",
        tmp_path / "records.npz")
    expected = classification_metrics(np.stack(probs), targets, CLASSES, True, thresholds)
    assert scores == {**expected, "images_scored": 12.0}
    for png in ("reliability.png", "confident_mistakes.png", "pr_curves.png"):
        assert (tmp_path / "plots" / png).stat().st_size > 1000, png
    records = bootstrap.Records.load(tmp_path / "records.npz")
    assert records.kind == "multilabel"
    assert records.arrays["cls.thresholds"].tolist() == list(thresholds)
    samples = bootstrap.metric_samples(records, np.ones((1, 12), np.int32), ["map", "ap/circle"])
    assert samples["map"][0] == pytest.approx(scores["map"], abs=1e-9)


def test_single_label_scores_only_images_with_exactly_one_label(split_dir, tmp_path):
    copy = tmp_path / "test"
    copy.mkdir()
    coco = json.loads((split_dir / "annotations.json").read_text())
    coco["images"][0]["labels"] = [1, 2]     # two labels: no single right answer
    coco["images"][1]["labels"] = []         # none
    coco["images"][2]["labels"] = [3]        # explicit label wins over the objects
    (copy / "annotations.json").write_text(json.dumps(coco))
    split = load_split(copy)
    images, targets = evaluate_classify.scored_images(split, multi_label=False)
    assert [im["id"] for im in images] == [im["id"] for im in split.images[2:]]
    assert targets[0] == 2
    scores = evaluate_classify.score_classification(split, images, targets,
                                                    _fake_probs(targets), False)
    assert scores["images_scored"] == 10.0
    _, multi = evaluate_classify.scored_images(split, multi_label=True)
    assert len(multi) == 12 and multi[0].tolist() == [True, True, False] and not multi[1].any()


def test_bad_predictions_are_data_errors(split_dir):
    split = load_split(split_dir)
    images, targets = evaluate_classify.scored_images(split, multi_label=False)
    probs = _fake_probs(targets)
    with pytest.raises(DataError):
        evaluate_classify.score_classification(split, images, targets, probs[:-1], False)
    with pytest.raises(DataError):
        evaluate_classify.score_classification(split, images, targets,
                                               [p[:2] for p in probs], False)
    with pytest.raises(DataError):     # thresholds of another number of classes
        evaluate_classify.score_classification(
            split, images, *evaluate_classify.scored_images(split, True)[1:],
            _fake_probs(evaluate_classify.scored_images(split, True)[1]), True, (0.5, 0.5))


@pytest.mark.parametrize("task", ["classify", "multilabel"])
def test_evaluate_and_evaluate_corrupted_dispatch_to_classification(split_dir, tmp_path,
                                                                    monkeypatch, task):
    """A fake checkpoint: meta.json's reader and models.predict replaced by fixed answers
    (by file name, so the corrupted copy gets the same ones)."""
    multi = task == "multilabel"
    split = load_split(split_dir)
    images, targets = evaluate_classify.scored_images(split, multi)
    by_name = {Path(im["file_name"]).name: p for im, p in zip(images, _fake_probs(targets))}
    meta = SimpleNamespace(task=task, class_names=CLASSES, config={},
                           thresholds=(0.5, 0.45, 0.55) if multi else None)
    monkeypatch.setattr(evaluate.models.CheckpointMeta, "read", staticmethod(lambda _: meta))
    seen = []

    def predict(checkpoint, paths, runtime="torch"):
        seen.append([Path(p).parent for p in paths])
        return [by_name[Path(p).name] for p in paths]

    monkeypatch.setattr(evaluate_classify.models, "predict", predict)
    clean = evaluate.evaluate(tmp_path / "ckpt", split_dir, records_path=tmp_path / "c.npz")
    assert clean["images_scored"] == 12.0 and (tmp_path / "c.npz").is_file()
    out = evaluate.evaluate_corrupted(tmp_path / "ckpt", split_dir, tmp_path / "cache",
                                      {"blur": 1}, records_dir=tmp_path / "corrupted")
    assert out["blur"] == clean        # same fixed answers on the copy: same metrics
    assert seen[1][0] != seen[0][0]    # ... read from the corrupted copy
    assert bootstrap.Records.load(tmp_path / "corrupted" / "blur.npz").image_ids == \
        bootstrap.Records.load(tmp_path / "c.npz").image_ids
