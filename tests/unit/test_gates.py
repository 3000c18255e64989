"""The gate: floors, non-regression, per-class floors, robustness, missing / NaN metrics."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from visiongate.config import GateConfig, RobustnessConfig
from visiongate.gates import Check, GateResult, evaluate_gate
from visiongate.outcomes import QuarantineSummary

CFG = GateConfig(floors={"map50": 0.5}, max_drop={"map50": 0.03, "map50_95": 0.05})


def _check(result: GateResult, name: str) -> Check:
    return next(c for c in result.checks if c.name == name)


def test_floor_pass_and_fail():
    ok = evaluate_gate({"map50": 0.812}, None, GateConfig(floors={"map50": 0.5}))
    assert ok.passed
    assert _check(ok, "floor:map50").detail == "map50 0.812 >= floor 0.500"
    assert ok.reasons == ["all 1 checks passed"]

    bad = evaluate_gate({"map50": 0.412}, None, GateConfig(floors={"map50": 0.5}))
    assert not bad.passed
    assert bad.reasons == ["map50 0.412 < floor 0.500"]


def test_floor_is_inclusive():
    assert evaluate_gate({"miou": 0.5}, None, GateConfig(floors={"miou": 0.5})).passed


def test_non_regression_pass_within_max_drop():
    champion = {"map50": 0.82, "map50_95": 0.60}
    result = evaluate_gate({"map50": 0.79, "map50_95": 0.61}, champion, CFG)
    assert result.passed, result.reasons          # a drop of exactly max_drop passes
    assert len(result.checks) == 3
    assert "champion 0.820" in _check(result, "no-regression:map50").detail


def test_non_regression_fail():
    champion = {"map50": 0.82, "map50_95": 0.60}
    result = evaluate_gate({"map50": 0.70, "map50_95": 0.59}, champion, CFG)
    assert not result.passed
    assert _check(result, "floor:map50").passed
    assert _check(result, "no-regression:map50_95").passed
    assert result.reasons == ["map50 0.700 dropped 0.120 vs champion 0.820 "
                              "(max drop 0.030; point estimates: no per-image records)"]


def test_no_champion_records_passing_regression_checks():
    result = evaluate_gate({"map50": 0.7, "map50_95": 0.4}, None, CFG)
    assert result.passed
    regression = [c for c in result.checks if c.name.startswith("no-regression:")]
    assert len(regression) == 2
    assert all(c.passed and "no champion yet" in c.detail for c in regression)


def test_missing_metric_fails():
    result = evaluate_gate({"map50": 0.9}, {"map50": 0.9, "map50_95": 0.6}, CFG)
    assert not result.passed
    assert result.reasons == [
        "map50_95 missing from candidate metrics (max drop 0.050 vs champion)"]
    floor_only = evaluate_gate({}, None, GateConfig(floors={"miou": 0.5}))
    assert not floor_only.passed
    assert "miou missing from candidate metrics" in floor_only.reasons[0]


def test_nan_metric_fails_even_without_champion():
    result = evaluate_gate({"map50": math.nan, "map50_95": 0.5}, None, CFG)
    assert not result.passed
    assert [c.name for c in result.checks if not c.passed] == [
        "floor:map50", "no-regression:map50"]
    assert all("map50 is NaN in candidate metrics" in r for r in result.reasons)


def test_champion_without_the_metric_is_not_a_regression():
    result = evaluate_gate({"map50": 0.9, "map50_95": 0.6}, {"map50": 0.8}, CFG)
    assert result.passed
    assert "champion has no map50_95" in _check(result, "no-regression:map50_95").detail


def test_empty_config_passes_and_says_so():
    result = evaluate_gate({"map50": 0.1}, None, GateConfig())
    assert result.passed and result.checks == ()
    assert result.reasons == ["no gate checks configured"]


def test_result_fields_and_frozen():
    result = evaluate_gate({"map50": 0.4}, None, GateConfig(floors={"map50": 0.5}))
    assert (result.passed, result.reasons) == (False, ["map50 0.400 < floor 0.500"])
    assert result.checks == (Check("floor:map50", False, "map50 0.400 < floor 0.500", 0.4,
                                   rule="point estimate >= floor"),)
    assert result.confidence is None and result.intervals == ()   # no bootstrap samples
    with pytest.raises(AttributeError):
        result.passed = True  # type: ignore[misc]


# --- per-class floors -------------------------------------------------------------------

def test_class_floors_pass_fail_and_absent_class():
    cfg = GateConfig(class_floors={"ap": 0.3})
    candidate = {"map50": 0.9, "ap/circle": 0.55, "ap/square": 0.3, "ap/triangle": math.nan}
    result = evaluate_gate(candidate, None, cfg)
    assert result.passed, result.reasons
    assert [c.name for c in result.checks] == [
        "class-floor:ap/circle", "class-floor:ap/square", "class-floor:ap/triangle"]
    absent = _check(result, "class-floor:ap/triangle")
    assert absent.passed and "no triangle objects in the test split" in absent.detail

    bad = evaluate_gate({**candidate, "ap/square": 0.12}, None, cfg)
    assert not bad.passed
    assert bad.reasons == ["ap/square 0.120 < floor 0.300"]


def test_class_floors_semantic_iou_and_no_per_class_metrics():
    cfg = GateConfig(class_floors={"iou": 0.5})
    result = evaluate_gate({"miou": 0.7, "iou/background": 0.95, "iou/circle": 0.45}, None, cfg)
    assert [c.name for c in result.checks if not c.passed] == ["class-floor:iou/circle"]
    none = evaluate_gate({"miou": 0.7}, None, cfg)
    assert not none.passed
    assert "no iou/<class> metrics" in none.reasons[0]


# --- robustness -------------------------------------------------------------------------

ROBUST = GateConfig(robustness=RobustnessConfig(
    metric="map50", corruptions={"blur": 1, "low_light": 2}, max_relative_drop=0.3))


def test_robustness_pass_and_fail():
    clean = {"map50": 0.8}
    ok = evaluate_gate(clean, None, ROBUST,
                       robustness={"blur": {"map50": 0.56}, "low_light": {"map50": 0.79}})
    assert ok.passed, ok.reasons                    # 0.8 -> 0.56 is exactly 30 %
    assert [c.name for c in ok.checks] == ["robust:blur", "robust:low_light"]
    assert "relative drop 30.0%, max 30.0%" in _check(ok, "robust:blur").detail

    bad = evaluate_gate(clean, None, ROBUST,
                        robustness={"blur": {"map50": 0.4}, "low_light": {"map50": 0.9}})
    assert not bad.passed
    assert bad.reasons == ["blur (severity 1): map50 0.400 vs clean 0.800 (relative drop "
                           "50.0%, max 30.0%; point estimates: no per-image records)"]


def test_robustness_missing_nan_and_not_evaluated():
    clean = {"map50": 0.8}
    missing = evaluate_gate(clean, None, ROBUST, robustness={"blur": {"map50": math.nan}})
    assert not missing.passed
    assert "map50 NaN in the corrupted-split metrics" in _check(missing, "robust:blur").detail
    assert "not evaluated on this corruption" in _check(missing, "robust:low_light").detail

    not_run = evaluate_gate(clean, None, ROBUST)
    assert not not_run.passed and len(not_run.checks) == 2
    assert all("robustness not evaluated" in r for r in not_run.reasons)

    no_clean = evaluate_gate({}, None, ROBUST, robustness={"blur": {"map50": 0.5},
                                                            "low_light": {"map50": 0.5}})
    assert not no_clean.passed
    assert "clean map50 missing from candidate metrics" in no_clean.reasons[0]


def test_robustness_zero_clean_score():
    cfg = GateConfig(robustness=RobustnessConfig(metric="miou", corruptions={"fog": 1}))
    assert evaluate_gate({"miou": 0.0}, None, cfg, robustness={"fog": {"miou": 0.0}}).passed


def test_unknown_corruption_names_the_choices():
    with pytest.raises(ValidationError, match="snow.*choose from.*blur"):
        RobustnessConfig(metric="map50", corruptions={"snow": 1})
    with pytest.raises(ValidationError, match="severity 4"):
        RobustnessConfig(metric="map50", corruptions={"blur": 4})


def test_data_quality_gate():
    cfg = GateConfig(max_quarantine_share=0.05)
    ok = evaluate_gate({}, None, cfg, quarantine=QuarantineSummary(95, 5, 0.05, {}))
    assert ok.passed and ok.checks[0].name == "data-quality"
    bad = evaluate_gate({}, None, cfg, quarantine=QuarantineSummary(94, 6, 0.06, {}))
    assert not bad.passed and "6 of 100 images (6.0%) > max 5.0%" in bad.reasons[0]
    unknown = evaluate_gate({}, None, cfg)
    assert not unknown.passed and "unknown" in unknown.reasons[0]
    assert evaluate_gate({}, None, GateConfig(), quarantine=None).checks == ()
