"""The gate's rules on hand-built paired bootstrap samples (issue #14): bounds, the
non-regression, robustness and floor rules, the small-split warning, point fallbacks and
the report's interval columns. tests/unit/test_gate_stats.py runs them on a fake detector."""

from __future__ import annotations

import math

import numpy as np
import pytest

from visiongate.config import GateConfig, RobustnessConfig
from visiongate.gate_stats import (GateSamples, gated_names, lower_bound, n_needed, two_sided,
                                   upper_bound)
from visiongate.gates import Check, GateResult, evaluate_gate
from visiongate.report import gate_report

R = 1000


def _check(result: GateResult, name: str) -> Check:
    return next(c for c in result.checks if c.name == name)


def _normal(mean: float, sd: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, sd, R)


# --- bounds -------------------------------------------------------------------------------

def test_bounds_are_percentiles():
    values = np.linspace(0, 1, 1001)
    assert lower_bound(values, 0.95) == pytest.approx(0.05)
    assert upper_bound(values, 0.95) == pytest.approx(0.95)
    interval = two_sided(values, 0.95)
    assert (interval.low, interval.high) == (pytest.approx(0.025), pytest.approx(0.975))
    assert interval.half_width == pytest.approx(0.475)
    assert n_needed(60, 0.06, 0.03) == 240 and n_needed(60, 0.031, 0.03) == 65
    assert n_needed(60, 0.06, 0.0) is None


def test_gated_names():
    cfg = GateConfig(floors={"map50": 0.5, "map_small": 0.1}, max_drop={"map50_95": 0.03},
                     class_floors={"ap": 0.3}, robustness=RobustnessConfig(
                         metric="map50", corruptions={"blur": 1}))
    names = gated_names(cfg, {"map50": 0.9, "ap/a": 0.5, "ap/b": 0.4, "recall/a": 0.7})
    assert names.candidate == ("map50", "map_small", "map50_95", "ap/a", "ap/b")
    assert (names.champion, names.corrupted) == (("map50_95",), ("map50",))


# --- non-regression -----------------------------------------------------------------------

CFG = GateConfig(max_drop={"map50_95": 0.03})
CHAMPION = {"map50_95": 0.60}


def _paired(change: float, sd: float, n_images: int = 60) -> GateSamples:
    champion = _normal(0.60, 0.02, seed=1)
    return GateSamples(n_images, {"map50_95": champion + _normal(change, sd, seed=2)},
                       {"map50_95": champion})


def test_refused_only_when_confident_of_a_drop_beyond_max_drop():
    sure = evaluate_gate({"map50_95": 0.55}, CHAMPION, CFG, samples=_paired(-0.05, 0.005))
    check = _check(sure, "no-regression:map50_95")
    assert not sure.passed and check.estimate == pytest.approx(-0.05)
    assert check.low < -0.05 < check.high and check.high < -0.03
    assert "95% confident it dropped more than that" in check.detail
    assert check.detail.startswith("map50_95 0.550 vs champion 0.600 (change -0.050, 95% interval")
    assert "upper one-sided 95% bound" in check.rule and not check.warning

    # The same point drop, but the paired change is too noisy to be sure: not refused.
    unsure = evaluate_gate({"map50_95": 0.55}, CHAMPION, CFG, samples=_paired(-0.05, 0.03))
    assert unsure.passed, unsure.reasons
    assert "dropped more than that, but not 95% confidently" in unsure.checks[0].detail
    # The point rule would have refused it.
    assert not evaluate_gate({"map50_95": 0.55}, CHAMPION, CFG).passed


def test_confidence_moves_the_bound():
    samples = _paired(-0.06, 0.02)   # upper 95 % bound ~ -0.027, upper 80 % ~ -0.043
    assert evaluate_gate({"map50_95": 0.54}, CHAMPION, CFG, samples=samples).passed
    loose = CFG.model_copy(update={"confidence": 0.8})
    assert not evaluate_gate({"map50_95": 0.54}, CHAMPION, loose, samples=samples).passed


def test_drop_of_exactly_max_drop_in_every_resample_passes():
    champion = _normal(0.6, 0.02)
    samples = GateSamples(60, {"map50_95": champion - 0.03}, {"map50_95": champion})
    assert evaluate_gate({"map50_95": 0.57}, CHAMPION, CFG, samples=samples).passed


def test_small_split_warning_names_the_images_needed():
    samples = _paired(0.0, 0.05, n_images=5)
    result = evaluate_gate({"map50_95": 0.6}, CHAMPION, CFG, samples=samples)
    check = _check(result, "no-regression:map50_95")
    half = (check.high - check.low) / 2
    needed = math.ceil(5 * (half / 0.03) ** 2)
    assert check.passed and half > 0.03
    assert check.warning == (f"test split too small to detect a drop of 0.030: the interval's "
                             f"half-width is {half:.3f} on 5 images; about {needed} test "
                             "images would be needed at this variance")
    assert check.warning in check.detail
    assert result.warnings == [f"no-regression:map50_95: {check.warning}"]
    page = gate_report("m", {"map50_95": 0.6}, CHAMPION, "1", result, {})
    assert "Small test split" in page and f"about {needed} test images" in page


def test_no_samples_for_the_metric_falls_back_to_point_and_says_so():
    cfg = GateConfig(max_drop={"map50_95": 0.03, "map_small": 0.03})
    candidate, champion = {"map50_95": 0.6, "map_small": 0.2}, {"map50_95": 0.6, "map_small": 0.3}
    result = evaluate_gate(candidate, champion, cfg, samples=_paired(0.0, 0.01))
    point = _check(result, "no-regression:map_small")
    assert not point.passed and point.low is None
    assert "point estimates: no usable bootstrap samples of map_small" in point.detail
    assert _check(result, "no-regression:map50_95").low is not None
    # a champion without records: the same fallback
    alone = GateSamples(60, {"map50_95": _normal(0.6, 0.02)})
    check = _check(evaluate_gate(candidate, champion, cfg, samples=alone), "no-regression:map50_95")
    assert check.low is None and "point estimates" in check.detail


def test_mostly_undefined_samples_are_not_used_and_nan_never_passes():
    candidate = _normal(0.6, 0.02)
    candidate[: R // 2 + 1] = np.nan
    samples = GateSamples(60, {"map50_95": candidate}, {"map50_95": _normal(0.6, 0.02)})
    check = _check(evaluate_gate({"map50_95": 0.6}, CHAMPION, CFG, samples=samples),
                   "no-regression:map50_95")
    assert check.low is None and "point estimates" in check.detail
    nan = evaluate_gate({"map50_95": math.nan}, CHAMPION, CFG, samples=_paired(0.0, 0.01))
    assert not nan.passed and "NaN in candidate metrics" in nan.reasons[0]


# --- floors -------------------------------------------------------------------------------

def test_floors_on_point_or_lower_bound():
    samples = GateSamples(60, {"map50": _normal(0.52, 0.02), "ap/a": _normal(0.33, 0.03),
                               "ap/b": np.full(R, np.nan)})
    candidate = {"map50": 0.52, "ap/a": 0.33, "ap/b": math.nan}
    point = GateConfig(floors={"map50": 0.5}, class_floors={"ap": 0.3})
    result = evaluate_gate(candidate, None, point, samples=samples)
    assert result.passed, result.reasons
    floor = _check(result, "floor:map50")
    assert floor.low < 0.52 < floor.high and floor.rule == "point estimate >= floor"
    assert "(95% interval [" in floor.detail

    lower = point.model_copy(update={"floors_on": "lower"})
    strict = evaluate_gate(candidate, None, lower, samples=samples)
    assert [c.name for c in strict.checks if not c.passed] == ["floor:map50", "class-floor:ap/a"]
    assert "lower one-sided 95% bound" in _check(strict, "floor:map50").rule
    assert _check(strict, "class-floor:ap/b").passed            # no b objects: nothing to judge
    # lower without samples: the point estimate, and the detail says so
    fallback = evaluate_gate(candidate, None, lower)
    assert fallback.passed and "point estimates: no per-image records" in fallback.checks[0].detail


# --- robustness ---------------------------------------------------------------------------

ROBUST = GateConfig(robustness=RobustnessConfig(metric="map50", corruptions={"blur": 1},
                                                max_relative_drop=0.3))


def test_robustness_refused_only_when_confident_of_a_larger_relative_drop():
    clean = _normal(0.8, 0.02)

    def gate(corrupted):
        samples = GateSamples(60, {"map50": clean}, corrupted={"blur": {"map50": corrupted}})
        return evaluate_gate({"map50": 0.8}, None, ROBUST, {"blur": {"map50": 0.8 * 0.6}},
                             samples=samples)

    sure = gate(clean * 0.6 + _normal(0, 0.01, seed=3))          # r ~ 0.40 +- 0.015
    check = _check(sure, "robust:blur")
    assert not sure.passed and check.low > 0.3 and check.estimate == pytest.approx(0.4)
    assert "95% confident it drops more than that" in check.detail
    unsure = gate(clean * 0.6 + _normal(0, 0.12, seed=3))        # r ~ 0.40 +- 0.15
    assert unsure.passed and "lower one-sided 95% bound" in _check(unsure, "robust:blur").rule
    assert not evaluate_gate({"map50": 0.8}, None, ROBUST, {"blur": {"map50": 0.48}}).passed


def test_report_shows_intervals_rules_and_table_columns():
    cfg = GateConfig(floors={"map50_95": 0.5}, max_drop={"map50_95": 0.03})
    result = evaluate_gate({"map50_95": 0.6, "map75": 0.7}, CHAMPION, cfg,
                           samples=_paired(0.0, 0.01))
    (interval,) = result.intervals
    assert interval.name == "map50_95" and interval.delta_low < 0 < interval.delta_high
    page = gate_report("m", {"map50_95": 0.6, "map75": 0.7}, {"map50_95": 0.6, "map75": 0.7},
                       "1", result, {})
    assert "| metric | candidate | 95% interval | champion (v1) | delta | delta 95% interval |" in page
    assert f"| map50_95 | 0.6000 | [{interval.low:.4f}, {interval.high:.4f}] |" in page
    assert "| map75 | 0.7000 | — | 0.7000 | +0.0000 | — |" in page
    assert "paired-bootstrap intervals" in page and "rule: refused iff 95% confident" in page
