"""Classification metrics (visiongate.classify_metrics): hand-computed cases equal to
scikit-learn, ECE by hand, per-class thresholds by hand; their paired bootstrap
(visiongate.bootstrap_classify) equals them on the identity resample and on any resample."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    hamming_loss,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from visiongate import bootstrap, gate_stats, vocab
from visiongate.bootstrap_classify import classification_records
from visiongate.classify_metrics import choose_thresholds, classification_metrics, reliability
from visiongate.config import GateConfig
from visiongate.errors import DataError

NAMES = ["cat", "dog", "fox"]
# Five images; top-1 probabilities kept off the ECE bin edges (multiples of 1/15).
PROBS = np.array([[0.72, 0.18, 0.10],    # cat, predicted cat (0.72)
                  [0.07, 0.83, 0.10],    # dog, predicted dog (0.83)
                  [0.62, 0.30, 0.08],    # dog, predicted cat (0.62)  wrong
                  [0.20, 0.19, 0.61],    # fox, predicted fox (0.61)
                  [0.30, 0.66, 0.04]])   # fox, predicted dog (0.66)  wrong
TARGETS = np.array([0, 1, 1, 2, 2])


def _close(a: float, b: float, tol: float = 1e-9) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


def test_single_label_by_hand():
    m = classification_metrics(PROBS, TARGETS, NAMES, multi_label=False)
    # cat: 1 true, 2 predicted, 1 hit; dog: 2, 2, 1; fox: 2, 1, 1
    hand = {"accuracy": 3 / 5, "top5_accuracy": 1.0,   # k = min(5, 3): every class
            "balanced_accuracy": (1 + 1 / 2 + 1 / 2) / 3,
            "f1_macro": (2 / 3 + 1 / 2 + 2 / 3) / 3, "f1_weighted": (2 / 3 + 2 / 2 + 2 * 2 / 3) / 5,
            "precision_macro": (1 / 2 + 1 / 2 + 1) / 3, "recall_macro": (1 + 1 / 2 + 1 / 2) / 3,
            "precision/cat": 0.5, "recall/cat": 1.0, "f1/cat": 2 / 3,
            "precision/dog": 0.5, "recall/dog": 0.5, "f1/dog": 0.5,
            "precision/fox": 1.0, "recall/fox": 0.5, "f1/fox": 2 / 3}
    for name, value in hand.items():
        assert m[name] == pytest.approx(value, abs=1e-12), name


def test_ece_by_hand():
    # bins (b/15, (b+1)/15]: 0.61, 0.62, 0.66 in (0.6, 0.667] — 1 of 3 right, mean 0.63;
    # 0.72 in (0.667, 0.733] — right; 0.83 in (0.8, 0.867] — right
    ece = 3 / 5 * abs(1 / 3 - 0.63) + 1 / 5 * abs(1 - 0.72) + 1 / 5 * abs(1 - 0.83)
    assert ece == pytest.approx(0.268)
    assert classification_metrics(PROBS, TARGETS, NAMES, False)["ece"] == pytest.approx(ece)
    bins = reliability(PROBS, TARGETS)
    assert bins.count.tolist() == [0] * 9 + [3, 1, 0, 1, 0, 0]
    assert bins.accuracy[9] == pytest.approx(1 / 3) and bins.confidence[9] == pytest.approx(0.63)


def _single_label_case(seed: int = 0, n: int = 60, k: int = 7):
    """Rounded probabilities (ties in top-1 and top-5), the last class never true and
    never predicted."""
    rng = np.random.default_rng(seed)
    probs = np.round(rng.dirichlet(np.ones(k), n), 1).astype(np.float32)
    probs[:, -1] = 0.0
    return probs, rng.integers(0, k - 1, n), [f"c{i}" for i in range(k)]


def _multilabel_case(seed: int = 1, n: int = 50, k: int = 5):
    rng = np.random.default_rng(seed)
    targets = rng.random((n, k)) < 0.35
    targets[:, -1] = False                                     # a class with no positive
    probs = np.clip(np.round(targets * 0.3 + rng.random((n, k)) * 0.7, 1), 0, 1)
    return probs.astype(np.float32), targets, [f"m{i}" for i in range(k)], \
        np.round(rng.uniform(0.2, 0.7, k), 2)


def test_single_label_equals_sklearn():
    probs, targets, names = _single_label_case()
    m, preds, labels = classification_metrics(probs, targets, names, False), probs.argmax(1), range(7)
    assert m["accuracy"] == accuracy_score(targets, preds)
    assert m["top5_accuracy"] == top_k_accuracy_score(targets, probs, k=5, labels=list(labels))
    assert m["balanced_accuracy"] == balanced_accuracy_score(targets, preds)
    for avg in ("macro", "weighted"):
        assert m[f"f1_{avg}"] == f1_score(targets, preds, labels=labels, average=avg,
                                          zero_division=np.nan)
    p, r, f, _ = precision_recall_fscore_support(targets, preds, labels=labels,
                                                 zero_division=np.nan)
    assert m["precision_macro"] == pytest.approx(np.nanmean(p))
    assert m["recall_macro"] == pytest.approx(np.nanmean(r))
    for c, name in enumerate(names):
        assert _close(m[f"precision/{name}"], p[c]) and _close(m[f"recall/{name}"], r[c])
        assert _close(m[f"f1/{name}"], f[c])
    assert math.isnan(m["f1/c6"]) and math.isnan(m["recall/c6"])   # left out of the means


def test_multilabel_equals_sklearn():
    probs, targets, names, thresholds = _multilabel_case()
    m = classification_metrics(probs, targets, names, True, thresholds)
    preds = probs >= thresholds
    aps = [average_precision_score(targets[:, c], probs[:, c]) for c in range(4)]
    assert m["map"] == pytest.approx(np.mean(aps), abs=1e-12)
    assert [m[f"ap/m{c}"] for c in range(4)] == pytest.approx(aps) and math.isnan(m["ap/m4"])
    assert m["f1_micro"] == f1_score(targets, preds, average="micro")
    assert m["f1_macro"] == f1_score(targets, preds, average="macro", zero_division=np.nan)
    assert m["subset_accuracy"] == accuracy_score(targets, preds)
    assert m["hamming_loss"] == hamming_loss(targets, preds)
    p, r, f, _ = precision_recall_fscore_support(targets, preds, zero_division=np.nan)
    for c, name in enumerate(names):
        assert _close(m[f"precision/{name}"], p[c]) and _close(m[f"recall/{name}"], r[c])
        assert _close(m[f"f1/{name}"], f[c])
    # no thresholds: 0.5 for every class
    assert classification_metrics(probs, targets, names, True)["subset_accuracy"] == \
        accuracy_score(targets, probs >= 0.5)


def test_metric_names_match_the_gate_vocabulary():
    for task, multi in (("classify", False), ("multilabel", True)):
        names, prefixes = vocab.gate_metrics(task)
        case = _multilabel_case()[:3] if multi else _single_label_case()
        m = classification_metrics(*case, multi)
        assert names <= set(m)
        assert {k.split("/")[0] for k in m if "/" in k} == prefixes
        assert all(bootstrap.is_supported(task, n) for n in names)


# Thresholds by hand: four classes, six validation images; "prob+" marks a positive image.
# A: 0.9+ 0.8 0.7+ 0.4+ 0.3 0.2   F1 at t (predict p >= t): 0.9 -> 2/4, 0.8 -> 2/5,
#    0.7 -> 4/6, 0.4 -> 6/7 (best), 0.3 -> 6/8, 0.2 -> 6/9.  Precision: 1, 1/2, 2/3, 3/4,
#    3/5, 1/2 with recall 1/3, 1/3, 2/3, 1, 1, 1.
# B: 0.6+ 0.5 0.45 0.35+ 0.1 0.05  F1: 0.6 -> 2/3, 0.5 -> 1/2, 0.45 -> 2/5, 0.35 -> 2/3,
#    ... — a tie at 2/3: the higher threshold, 0.6. Precision 1 at 0.6 (recall 1/2); 1/2
#    at 0.35 (recall 1).
# C: no positive image: keeps 0.5.
# D: 0.8 0.7+ 0.6 0.5 0.4 0.3+     F1: 0.8 -> 0, 0.7 -> 1/2, 0.6 -> 2/5, 0.5 -> 1/3,
#    0.4 -> 2/7, 0.3 -> 1/2 — a tie: 0.7. Precision never above 1/2 (at 0.7).
THR_PROBS = np.array([[0.9, 0.6, 0.3, 0.8], [0.8, 0.5, 0.2, 0.7], [0.7, 0.45, 0.9, 0.6],
                      [0.4, 0.35, 0.1, 0.5], [0.3, 0.1, 0.6, 0.4], [0.2, 0.05, 0.4, 0.3]])
THR_TARGETS = np.array([[1, 1, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0],
                        [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]], dtype=bool)


@pytest.mark.parametrize("target_precision, expected", [
    (None, [0.4, 0.6, 0.5, 0.7]),      # best F1 each
    # 0.9: A only at 0.9 (precision 1); B at 0.6; D never reaches it: its best F1, 0.7
    (0.9, [0.9, 0.6, 0.5, 0.7]),
    # 0.6: A reaches it at 0.9, 0.7, 0.4, 0.3 — recall 1 at 0.4 and 0.3: lowering to 0.3
    # adds a false positive and no recall, so 0.4; B only at 0.6; D never: 0.7
    (0.6, [0.4, 0.6, 0.5, 0.7]),
    # 0.5: A recall 1 at 0.4, 0.3, 0.2: 0.4; B: 0.35 (recall 1); D: 0.7 (precision 1/2)
    (0.5, [0.4, 0.35, 0.5, 0.7]),
])
def test_choose_thresholds_by_hand(target_precision, expected):
    got = choose_thresholds(THR_PROBS, THR_TARGETS, target_precision)
    assert got.tolist() == pytest.approx(expected)


def _identity_and_resample(probs, targets, names, multi, thresholds=None):
    n = len(probs)
    records = classification_records(probs, targets, names, multi, thresholds, range(10, 10 + n))
    full = classification_metrics(probs, targets, names, multi, thresholds)
    wanted = [k for k in full if bootstrap.is_supported(records.kind, k)]
    counts = np.vstack([np.ones(n, np.int32), bootstrap.resample_counts(n, 5, seed=3)])
    samples = bootstrap.metric_samples(records, counts, wanted)
    for r, row in enumerate(counts):
        drawn = np.repeat(np.arange(n), row)       # the resampled multiset of images
        expected = classification_metrics(probs[drawn], targets[drawn], names, multi, thresholds)
        for name in wanted:
            assert _close(samples[name][r], expected[name]), (r, name)
    return wanted


def test_bootstrap_equals_metrics_single_label():
    probs, targets, names = _single_label_case()
    wanted = _identity_and_resample(probs, targets, names, False)
    assert set(vocab.CLASSIFY_METRICS) <= set(wanted) and "f1/c3" in wanted


def test_bootstrap_equals_metrics_multilabel():
    probs, targets, names, thresholds = _multilabel_case()
    wanted = _identity_and_resample(probs, targets, names, True, thresholds)
    assert set(vocab.MULTILABEL_METRICS) <= set(wanted) and "ap/m2" in wanted


def test_weighted_ap_is_sklearn_with_sample_weights():
    probs, targets, _, _ = _multilabel_case(seed=4)
    records = classification_records(probs, targets, [f"m{i}" for i in range(5)], True, None,
                                     range(len(probs)))
    counts = bootstrap.resample_counts(len(probs), 4, seed=9)
    samples = bootstrap.metric_samples(records, counts, ["ap/m0", "ap/m1"])
    for r in range(4):
        for c in (0, 1):
            assert samples[f"ap/m{c}"][r] == pytest.approx(average_precision_score(
                targets[:, c], probs[:, c], sample_weight=counts[r]), abs=1e-12)


@pytest.mark.parametrize("multi", [False, True])
def test_paired_bootstrap_of_identical_models_has_zero_difference(tmp_path, multi):
    case = _multilabel_case()[:3] if multi else _single_label_case()
    records = classification_records(*case, multi, None, range(len(case[0])))
    files = gate_stats.RecordFiles.in_dir(tmp_path, champion=True, corruptions=[])
    records.save(files.candidate), records.save(files.champion)
    metric, per_class = ("map", "ap") if multi else ("f1_macro", "recall")
    cfg = GateConfig(max_drop={metric: 0.05}, class_floors={per_class: 0.1}, resamples=200)
    metrics = classification_metrics(*case, multi)
    samples = gate_stats.load_gate_samples(files, cfg, metrics)
    assert samples.n_images == len(case[0])
    assert np.all(samples.difference(metric) == 0)
    assert f"{per_class}/{case[2][0]}" in samples.candidate
    assert samples.metric(metric).std() > 0       # the resamples do vary


def _corrupt(tmp_path, records, **arrays):
    bad = bootstrap.Records(arrays.pop("kind", records.kind), records.image_ids,
                            {**records.arrays, **arrays})
    return bad.save(tmp_path / "bad.npz")


def test_records_loader_refuses_corrupted_files(tmp_path):
    probs, targets, names = _single_label_case(n=8)
    single = classification_records(probs, targets, names, False, None, range(8))
    assert bootstrap.Records.load(single.save(tmp_path / "ok.npz")).kind == "classify"
    mprobs, mtargets, mnames, thr = _multilabel_case(n=8)
    multi = classification_records(mprobs, mtargets, mnames, True, thr, range(8))
    assert bootstrap.Records.load(multi.save(tmp_path / "ok2.npz")).kind == "multilabel"
    bad = [(single, {"kind": "classes"}),
           (single, {"cls.probs": probs[:, :3]}),
           (single, {"cls.probs": probs + 1.01}),
           (single, {"cls.probs": np.full_like(probs, np.nan)}),
           (single, {"cls.target": -targets - 1}),
           (single, {"cls.target": targets + 7}),
           (single, {"cls.target": targets.astype(float)}),
           (multi, {"cls.target": mtargets[:5]}),
           (multi, {"cls.target": mtargets.astype(np.int64) * 3}),
           (multi, {"cls.thresholds": thr[:2]}),
           (multi, {"cls.thresholds": -thr}),
           (multi, {"kind": "classify"})]
    for records, change in bad:
        with pytest.raises(DataError):
            bootstrap.Records.load(_corrupt(tmp_path, records, **dict(change)))
    arrays = dict(multi.arrays)
    del arrays["cls.thresholds"]
    with pytest.raises(DataError):
        bootstrap.Records.load(bootstrap.Records("multilabel", multi.image_ids, arrays).save(
            tmp_path / "missing.npz"))


@pytest.mark.parametrize("k", [1, 2])
def test_few_classes(k):
    """Top-k of every class is 1; two classes go to sklearn as one score column."""
    probs, targets = PROBS[:, :k] / PROBS[:, :k].sum(axis=1, keepdims=True), TARGETS % k
    m = classification_metrics(probs, targets, NAMES[:k], False)
    assert m["top5_accuracy"] == 1.0 and m["accuracy"] == accuracy_score(targets, probs.argmax(1))
    samples = bootstrap.metric_samples(classification_records(
        probs, targets, NAMES[:k], False, None, range(5)), np.ones((1, 5), np.int32),
        ["top5_accuracy", "f1_macro"])
    assert samples["top5_accuracy"][0] == 1.0 and samples["f1_macro"][0] == m["f1_macro"]


def test_inputs_are_checked():
    with pytest.raises(DataError):
        classification_metrics(PROBS[:, :2], TARGETS, NAMES, False)
    with pytest.raises(DataError):
        classification_metrics(PROBS, TARGETS + 1, NAMES, False)
    with pytest.raises(DataError):
        classification_metrics(PROBS, THR_TARGETS[:5, :3], NAMES, True, [0.5, 0.5])
    with pytest.raises(DataError):
        classification_records(PROBS, TARGETS, NAMES, False, None, [1, 1, 2, 3, 4])
