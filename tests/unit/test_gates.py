"""The gate: floors, non-regression, no champion, missing / NaN metrics."""

from __future__ import annotations

import math

import pytest

from visiongate.config import GateConfig
from visiongate.gates import Check, GateResult, evaluate_gate

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
    assert result.reasons == [
        "map50 0.700 dropped 0.120 vs champion 0.820 (max drop 0.030)"]


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


def test_to_dict_and_frozen():
    result = evaluate_gate({"map50": 0.4}, None, GateConfig(floors={"map50": 0.5}))
    assert result.to_dict() == {
        "passed": False, "reasons": ["map50 0.400 < floor 0.500"],
        "checks": [{"name": "floor:map50", "passed": False,
                    "detail": "map50 0.400 < floor 0.500"}]}
    with pytest.raises(AttributeError):
        result.passed = True  # type: ignore[misc]
