"""The gate report page: verdict, both metric columns, every check, lineage."""

from __future__ import annotations

import math

from visiongate.config import GateConfig, RobustnessConfig
from visiongate.gates import evaluate_gate
from visiongate.outcomes import QuarantineSummary
from visiongate.report import gate_report

CFG = GateConfig(floors={"map50": 0.5}, max_drop={"map50": 0.03})
LINEAGE = {"data.test.md5": "0123abcd.dir", "git_sha": "deadbeef"}


def test_report_keep_champion():
    candidate = {"map50": 0.70, "map50_95": 0.41, "map_small": math.nan}
    champion = {"map50": 0.82, "map50_95": 0.45, "map_small": math.nan}
    result = evaluate_gate(candidate, champion, CFG)
    page = gate_report("shapes-detect", candidate, champion, "3", result, LINEAGE)
    assert page.startswith("# shapes-detect: KEEP CHAMPION")
    assert "PROMOTE" not in page
    assert "| map50 | 0.7000 | 0.8200 | -0.1200 |" in page
    assert "| map50_95 | 0.4100 | 0.4500 | -0.0400 |" in page
    assert "| map_small | NaN | NaN | — |" in page
    assert "champion (v3)" in page
    for check in result.checks:
        assert check.detail in page
    assert "❌" in page and "✅" in page
    assert "| data.test.md5 | `0123abcd.dir` |" in page
    assert "deadbeef" in page


def test_report_promote_without_champion():
    candidate = {"map50": 0.9, "ap/a|b": 0.8}
    result = evaluate_gate(candidate, None, CFG)
    page = gate_report("shapes-detect", candidate, None, None, result, {})
    assert page.startswith("# shapes-detect: PROMOTE")
    assert "KEEP CHAMPION" not in page
    assert "| map50 | 0.9000 | — | — |" in page
    assert "| a\\|b | 0.8000 |" in page              # per-class row; pipes escaped
    assert "no champion yet" in page
    assert "❌" not in page
    assert "(none recorded)" in page


def test_report_robustness_table():
    robust = RobustnessConfig(metric="map50", corruptions={"blur": 1, "fog": 2},
                              max_relative_drop=0.3)
    cfg = GateConfig(floors={"map50": 0.5}, robustness=robust)
    candidate = {"map50": 0.8}
    robustness = {"blur": {"map50": 0.4}, "fog": {"map50": 0.72}}
    result = evaluate_gate(candidate, None, cfg, robustness=robustness)
    page = gate_report("shapes-detect", candidate, None, None, result, {},
                       robustness=robustness, robustness_cfg=robust)
    assert "## Robustness" in page
    assert "| blur | 1 | 0.8000 | 0.4000 | 50.0% | 30.0% | ❌ |" in page
    assert "| fog | 2 | 0.8000 | 0.7200 | 10.0% | 30.0% | ✅ |" in page
    assert page.index("## Robustness") < page.index("## Lineage")

    not_run = evaluate_gate(candidate, None, cfg)
    page = gate_report("shapes-detect", candidate, None, None, not_run, {},
                       robustness_cfg=robust)
    assert "robustness not evaluated" in page
    assert "## Robustness" not in gate_report("m", candidate, None, None, not_run, {})


def test_report_per_class_table_and_plot_links():
    candidate = {"map50": 0.9, "ap/circle": 0.8, "recall/circle": 0.7, "ap/square": 0.6,
                 "recall/square": 0.5}
    champion = {"map50": 0.85, "ap/circle": 0.75, "recall/circle": 0.7, "ap/square": 0.6,
                "recall/square": 0.55}
    result = evaluate_gate(candidate, champion, CFG)
    page = gate_report("shapes-detect", candidate, champion, "2", result, {},
                       plots=["plots/pr_curves.png"], run_id="abc123")
    assert "| class | ap | recall |" in page
    assert "| circle | 0.8000 (+0.0500) | 0.7000 (+0.0000) |" in page
    assert "| square | 0.6000 (+0.0000) | 0.5000 (-0.0500) |" in page
    assert "| ap/circle |" not in page                  # per-class keys only in their table
    assert "- [pr_curves.png](plots/pr_curves.png)" in page and "`abc123`" in page


def test_report_data_quality_check():
    cfg = GateConfig(floors={"map50": 0.5}, max_quarantine_share=0.05)
    bad = QuarantineSummary(images=93, quarantined=7, share=0.07, by_kind={"zero-byte": 7})
    result = evaluate_gate({"map50": 0.9}, None, cfg, quarantine=bad)
    assert not result.passed
    assert "quarantined 7 of 100 images (7.0%) > max 5.0%" in gate_report(
        "x", {"map50": 0.9}, None, None, result, {})


def test_report_shows_heatmaps_map_and_first_suspects():
    from visiongate.outcomes import Insight

    candidate = {"map50": 0.9}
    result = evaluate_gate(candidate, None, CFG)
    insight = Insight("plots/heatmaps.png", "plots/test_map.png", "map/embeddings.npz",
                      "suspects/suspects.csv", 2, 1,
                      (("train", "images/a|1.png", "7", "swapped_class", "0.0123", "x"),))
    page = gate_report("shapes-detect", candidate, None, None, result, {}, insight=insight)
    assert "![heatmaps](plots/heatmaps.png)" in page
    assert "[test_map.png](plots/test_map.png)" in page and "`map/embeddings.npz`" in page
    assert "Label quality of train and val: 2 labels ranked, 1 below 0.1" in page
    assert "| train | images/a\\|1.png | 7 | swapped_class | 0.0123 | x |" in page
    off = gate_report("shapes-detect", candidate, None, None, result, {}, insight=Insight())
    assert "Seeing inside" not in off


def test_report_says_which_diagnostic_could_not_be_made():
    from visiongate.outcomes import Insight

    result = evaluate_gate({"map50": 0.9}, None, CFG)
    page = gate_report("m", {"map50": 0.9}, None, None, result, {},
                       insight=Insight(problems=("heatmaps / test-split map: OSError: disk full",)))
    assert "could not be made — heatmaps / test-split map: OSError: disk full" in page
    assert "PROMOTE" in page  # a diagnostic never decides
