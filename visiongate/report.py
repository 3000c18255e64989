"""The markdown page that explains a gate decision (Prefect and MLflow artifact).

Pure: builds a string; the callers publish it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from visiongate.config import RobustnessConfig
from visiongate.export import Deployment
from visiongate.gate_stats import MetricInterval
from visiongate.gates import Check, GateResult, relative_drop
from visiongate.outcomes import Insight

if TYPE_CHECKING:
    from visiongate.class_changes import Compared

PROMOTE = "PROMOTE"
KEEP = "KEEP CHAMPION"


def _cell(text: object) -> str:
    """Table-safe text: pipes and newlines would break a markdown row."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _number(metrics: dict | None, name: str) -> float | None:
    if metrics is None or metrics.get(name) is None:
        return None
    return float(metrics[name])


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return "NaN" if math.isnan(value) else f"{value:.4f}"


def _delta(candidate: float | None, champion: float | None) -> str:
    if candidate is None or champion is None or math.isnan(candidate) or math.isnan(champion):
        return "—"
    return f"{candidate - champion:+.4f}"


def _headline(model_name: str, champion_version: str | None, result: GateResult) -> list[str]:
    verdict = PROMOTE if result.passed else KEEP
    failed = sum(not c.passed for c in result.checks)
    summary = (f"{len(result.checks) - failed} of {len(result.checks)} gate checks passed: "
               f"{result.decision(champion_version)}.")
    lines = [f"# {model_name}: {verdict}", "", f"**Verdict: {verdict}** — {summary}", ""]
    if result.warnings:
        lines += ["> ⚠️ **Small test split.** " + " · ".join(map(_cell, result.warnings)), ""]
    return lines


def _span(low: float | None, high: float | None, fmt: str = ".4f") -> str:
    return "—" if low is None or high is None else f"[{low:{fmt}}, {high:{fmt}}]"


def _metric_table(candidate: dict, champion: dict | None, champion_version: str | None,
                  result: GateResult, compared: Compared | None = None) -> list[str]:
    """Headline metrics; with bootstrap samples, interval columns for the gated ones. When
    the class lists differ, "delta" is the candidate's change on the comparison view."""
    versus = compared.metrics if compared is not None else candidate
    names = list(candidate) + [n for n in (champion or {}) if n not in candidate]
    head = f"champion (v{champion_version})" if champion_version else "champion"
    intervals = {i.name: i for i in result.intervals}
    ci = f"{result.confidence:.0%} interval" if intervals else ""
    cols = ["metric", "candidate", *([ci] if ci else []), head, "delta",
            *([f"delta {ci}"] if ci else [])]
    lines = ["## Metrics", ""]
    if compared is not None:
        lines += [f"Classes changed — {_cell(compared.note)}. The champion column and every "
                  "delta are on that comparison view.", ""]
    lines += ["| " + " | ".join(cols) + " |", "|---|" + "---:|" * (len(cols) - 1)]
    for name in (n for n in names if "/" not in n):
        cand, champ, iv = _number(candidate, name), _number(champion, name), intervals.get(name)
        cells = [_fmt(cand), _fmt(champ), _delta(_number(versus, name), champ)]
        if ci:
            cells[1:1] = [_span(iv and iv.low, iv and iv.high)]
            cells.append(_span(iv and iv.delta_low, iv and iv.delta_high, "+.4f"))
        lines.append(f"| {_cell(name)} | " + " | ".join(cells) + " |")
    if not names:
        lines.append("| (no metrics) |" + " — |" * (len(cols) - 1))
    return lines + [""] + _per_class_table([n for n in names if "/" in n], candidate, champion,
                                           intervals, versus)


def _per_class_table(names: list[str], candidate: dict, champion: dict | None,
                     intervals: dict[str, MetricInterval], versus: dict) -> list[str]:
    """Rows = classes, columns = per-class metrics (`ap/<class>`, `recall/<class>` ...):
    candidate value, its bootstrap interval when gated, and its delta to the champion in
    brackets."""
    prefixes = list(dict.fromkeys(n.split("/", 1)[0] for n in names))
    classes = list(dict.fromkeys(n.split("/", 1)[1] for n in names))
    if not names:
        return []
    lines = ["### Per class", "", "candidate (delta to champion)", "",
             "| class | " + " | ".join(map(_cell, prefixes)) + " |",
             "|---|" + "---:|" * len(prefixes)]
    for cls in classes:
        cells = []
        for prefix in prefixes:
            key = f"{prefix}/{cls}"
            cand, champ = _number(candidate, key), _number(champion, key)
            delta, iv = _delta(_number(versus, key), champ), intervals.get(key)
            cells.append(_fmt(cand) + (f" {_span(iv.low, iv.high)}" if iv else "")
                         + (f" ({delta})" if delta != "—" else ""))
        lines.append(f"| {_cell(cls)} | " + " | ".join(cells) + " |")
    return lines + [""]


def _plot_links(plots: list[str], run_id: str | None) -> list[str]:
    if not plots:
        return []
    where = f" of MLflow run `{run_id}`" if run_id else ""
    lines = ["## Plots", "", f"Artifacts{where}, beside this report:", ""]
    return lines + [f"- [{Path(p).name}]({p})" for p in plots] + [""]


def _insight(insight: Insight | None) -> list[str]:
    """Heatmaps, the test-split map and the first suspected label mistakes."""
    if insight is None or not (insight.heatmaps or insight.test_map or insight.suspects
                               or insight.problems):
        return []
    lines = ["## Seeing inside the model and the data", ""]
    lines += [f"- ⚠️ could not be made — {_cell(problem)}" for problem in insight.problems]
    if insight.heatmaps:
        lines += [f"![heatmaps]({insight.heatmaps})", "",
                  f"[{Path(insight.heatmaps).name}]({insight.heatmaps}): the worst test images; "
                  "red where the prediction depended most on the pixels (README \"Seeing "
                  "inside\" says how to read it).", ""]
    if insight.test_map:
        lines += [f"- Test-split map: [{Path(insight.test_map).name}]({insight.test_map}) "
                  f"(features: `{insight.embeddings}`)"]
    if insight.suspects:
        lines += [f"- Label quality of train and val: {insight.suspects_count} labels ranked, "
                  f"{insight.suspects_flagged} below 0.1 — likely mistakes "
                  f"([{Path(insight.suspects).name}]({insight.suspects}); "
                  "`visiongate data review` lists them, lowest first)"]
    if insight.top_suspects:
        lines += ["", "| split | file | annotation | kind | score | detail |",
                  "|---|---|---|---|---:|---|"]
        lines += ["| " + " | ".join(_cell(v) for v in row[:6]) + " |"
                  for row in insight.top_suspects]
    return lines + [""]


def _deployment(deployment: Deployment | None) -> list[str]:
    """How the candidate would be served: each exported artifact against PyTorch."""
    if deployment is None:
        return []
    lines = ["## Serving artifacts", "",
             f"Serves with **{deployment.runtime}**"
             + (f" — {deployment.note}." if deployment.note else ".")]
    if deployment.checks:
        lines += ["", f"Each artifact scored on the same test split; refused when a headline "
                  f"metric differs from PyTorch by more than ±{deployment.tolerance:g}.", "",
                  "| runtime | ms / image | largest difference | verdict |", "|---|---|---|---|",
                  f"| torch | {_fmt_ms(deployment.torch_ms)} | — | reference |"]
        for check in deployment.checks:
            worst = max(check.deltas.items(), key=lambda kv: abs(kv[1]), default=None)
            diff = f"{worst[0]} {worst[1]:+.4f}" if worst else "—"
            verdict = "passed" if check.passed else f"⚠️ refused — {_cell(check.problem)}"
            lines.append(f"| {check.runtime} | {_fmt_ms(check.ms_per_image)} | {diff} | "
                         f"{verdict} |")
    return lines + [""]


def _fmt_ms(ms: float | None) -> str:
    return "—" if ms is None else f"{ms:.1f}"


def _check_list(result: GateResult) -> list[str]:
    lines = ["## Gate checks", ""]
    if result.confidence is not None:
        c = f"{result.confidence:.0%}"
        lines += [(f"Intervals: two-sided {c} paired-bootstrap intervals over the test images "
                   "(candidate, champion and corrupted copies resampled alike). Non-regression "
                   f"and robustness refuse only when {c} confident of a drop beyond their limit."),
                  ""]
    for check in result.checks:
        mark = "✅" if check.passed else "❌"
        lines.append(f"- {mark} `{check.name}` — {check.detail}")
        lines += _check_numbers(check)
    if not result.checks:
        lines.append("- no gate checks configured")
    return lines + [""]


def _check_numbers(check: Check) -> list[str]:
    """A sub-line naming the rule applied (the estimate and interval are in the detail)."""
    return [f"  - rule: {_cell(check.rule)}"] if check.rule else []


def _lineage_table(lineage: dict[str, str]) -> list[str]:
    lines = ["## Lineage", "", "| key | value |", "|---|---|"]
    lines += [f"| {_cell(k)} | `{_cell(v)}` |" for k, v in lineage.items()]
    if not lineage:
        lines.append("| (none recorded) | — |")
    return lines + [""]


def _robustness_table(candidate: dict, robustness: dict[str, dict] | None,
                      cfg: RobustnessConfig | None, result: GateResult) -> list[str]:
    if cfg is None or not cfg.corruptions:
        return []
    lines = ["## Robustness", "",
             f"Candidate `{_cell(cfg.metric)}` on corrupted copies of the test split.", ""]
    if robustness is None:
        return lines + ["robustness not evaluated", ""]
    checks = {c.name: c for c in result.checks}
    lines += ["| corruption | severity | clean | corrupted | relative drop | max allowed | |",
              "|---|---:|---:|---:|---:|---:|:-:|"]
    clean = _number(candidate, cfg.metric)
    for name, severity in cfg.corruptions.items():
        corrupted = _number(robustness.get(name), cfg.metric)
        usable = [v for v in (clean, corrupted) if v is not None and not math.isnan(v)]
        drop = f"{relative_drop(clean, corrupted):.1%}" if len(usable) == 2 else "—"
        check = checks.get(f"robust:{name}")
        if check is not None and check.low is not None:
            drop += f" {_span(check.low, check.high, '.1%')}"
        mark = {True: "✅", False: "❌"}.get(check.passed if check else None, "—")
        lines.append(f"| {_cell(name)} | {severity} | {_fmt(clean)} | {_fmt(corrupted)} | "
                     f"{drop} | {cfg.max_relative_drop:.1%} | {mark} |")
    return lines + [""]


def gate_report(model_name: str, candidate: dict, champion: dict | None,
                champion_version: str | None, result: GateResult,
                lineage: dict[str, str],
                robustness: dict[str, dict[str, float]] | None = None,
                robustness_cfg: RobustnessConfig | None = None,
                plots: list[str] | None = None, run_id: str | None = None,
                insight: Insight | None = None, deployment: Deployment | None = None,
                compared: Compared | None = None) -> str:
    """One markdown page: verdict, candidate-vs-champion metrics, checks, robustness,
    insight, the serving artifacts' parity checks, plots, lineage.

    The robustness table appears when ``robustness_cfg`` (the gate's
    ``GateConfig.robustness``) configures corruptions; ``robustness`` is the same
    corruption -> metrics mapping given to ``evaluate_gate``. ``plots`` are artifact
    paths relative to the report (e.g. ``plots/pr_curves.png``) in MLflow run ``run_id``.
    """
    lines = _headline(model_name, champion_version, result)
    lines += _metric_table(candidate, champion, champion_version, result, compared)
    lines += _check_list(result)
    lines += _robustness_table(candidate, robustness, robustness_cfg, result)
    lines += _insight(insight)
    lines += _deployment(deployment)
    lines += _plot_links(plots or [], run_id)
    lines += _lineage_table(lineage)
    return "\n".join(lines)
