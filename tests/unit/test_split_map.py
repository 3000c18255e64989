"""The test-split map: outcomes written by the evaluation, t-SNE coordinates, the plot and
the saved embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from visiongate import split_map
from visiongate.diagnostics import match


def _outcomes(n: int, values) -> split_map.ImageOutcomes:
    return split_map.ImageOutcomes([f"images/{i}.png" for i in range(n)],
                                   ["circle" if i % 2 else "square" for i in range(n)],
                                   values, ["images/0.png"])


def test_outcomes_round_trip(tmp_path):
    written = _outcomes(3, ["correct", "missed", 0.5])
    split_map.write_outcomes(tmp_path, written)
    assert split_map.read_outcomes(tmp_path) == written
    assert split_map.read_outcomes(tmp_path / "nowhere") is None


@pytest.mark.parametrize("gt,pred,word", [
    ([[0, 0, 10, 10]], {"boxes": [[0, 0, 10, 10]], "labels": [1], "scores": [0.9]}, "correct"),
    ([[0, 0, 10, 10]], {"boxes": [], "labels": [], "scores": []}, "missed"),
    ([], {"boxes": [[0, 0, 10, 10]], "labels": [1], "scores": [0.9]}, "false positive"),
    ([[0, 0, 10, 10]], {"boxes": [[0, 0, 10, 10]], "labels": [2], "scores": [0.9]}, "wrong class"),
])
def test_detection_outcome_in_one_word(gt, pred, word):
    gt_boxes = (np.array(gt, float).reshape(-1, 4), np.ones(len(gt), np.int64))
    pred = {k: np.array(v, float if k != "labels" else np.int64) for k, v in pred.items()}
    assert split_map.detection_outcome(match(gt_boxes, pred, 0.25)) == word


def test_two_separated_clusters_stay_apart_on_the_map():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 0.1, (20, 16)), rng.normal(5, 0.1, (20, 16))
    coords = split_map.project(np.vstack([a, b]))
    assert coords.shape == (40, 2) and np.isfinite(coords).all()
    ca, cb = coords[:20].mean(0), coords[20:].mean(0)
    spread = max(coords[:20].std(0).max(), coords[20:].std(0).max())
    assert np.linalg.norm(ca - cb) > 3 * spread


@pytest.mark.parametrize("n", [1, 2, 4])
def test_tiny_splits_get_coordinates_without_tsne(n):
    coords = split_map.project(np.arange(n * 3, dtype=float).reshape(n, 3))
    assert coords.shape == (n, 2) and np.isfinite(coords).all()


@pytest.mark.parametrize("values", [["correct", "wrong"] * 5, [0.1 * i for i in range(10)]])
def test_map_plot_and_embeddings_are_written(tmp_path, values):
    outcomes = _outcomes(10, values)
    embeddings = np.random.default_rng(1).normal(size=(10, 8))
    coords = split_map.project(embeddings)
    png = split_map.plot_map(coords, outcomes, tmp_path / "map.png", "t")
    npz = split_map.save_embeddings(tmp_path / "e.npz", outcomes, embeddings, coords)
    assert png.stat().st_size > 1000
    saved = np.load(npz)
    assert saved["embeddings"].shape == (10, 8) and list(saved["files"]) == outcomes.files
