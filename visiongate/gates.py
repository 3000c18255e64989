"""The promotion gate: a pure function of (candidate, champion, thresholds, samples).

Point rules (``samples`` None, or a metric the bootstrap does not resample; the detail
then says "point estimates"): floors ``candidate[m] >= floor``; non-regression
``candidate[m] >= champion[m] - max_drop`` (both evaluated now on the same pinned test
split); robustness ``(clean - corrupted) / clean <= max_relative_drop`` per corruption.

With ``samples`` (gate_stats.GateSamples: paired bootstrap samples over the test images,
one counts matrix for candidate, champion and corrupted copies), at c = ``confidence``:

- Non-regression: d = candidate - champion per resample; refused when we are c-confident
  the candidate is worse than the champion by more than max_drop, i.e. the upper
  one-sided c bound of d (its c-quantile) < -max_drop. Shows d's two-sided c interval.
- Robustness: r = (clean - corrupted) / clean per resample; refused when we are
  c-confident r > max_relative_drop, i.e. r's lower one-sided c bound is above it.
- Floors and per-class floors: ``floors_on: point`` judges the estimate, ``lower`` its
  lower one-sided c bound; the interval is shown either way.
- Small split: a two-sided interval of d (r) with a half-width above a non-zero max_drop
  (max_relative_drop) adds a warning naming about how many test images would detect
  such a drop at the observed variance: n * (half-width / max_drop)^2, rounded up.

A gated metric that the candidate lacks, or that is NaN, fails its check: a gate never
passes on a number it did not see. Per-class floors cover every ``<prefix>/<class>`` key
of each prefix in ``class_floors``; a NaN per-class value (no objects of that class in
the test split) passes and says so; a prefix without keys fails. Data quality: the
quarantined share of the dataset's images is at most ``max_quarantine_share``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from visiongate.config import GateConfig, RobustnessConfig
from visiongate.gate_checks import (TOLERANCE, Check, Evidence, metric_value, small_split, span,
                                    unusable, with_warning)
from visiongate.gate_stats import (GateSamples, MetricInterval, lower_bound, metric_intervals,
                                   two_sided, upper_bound)
from visiongate.outcomes import decision

if TYPE_CHECKING:
    from visiongate.class_changes import Compared
    from visiongate.outcomes import QuarantineSummary


@dataclass(frozen=True)
class GateResult:
    passed: bool
    checks: tuple[Check, ...]
    confidence: float | None = None  # None: no bootstrap samples, point estimates only
    intervals: tuple[MetricInterval, ...] = ()  # of every sampled gated metric

    @property
    def warnings(self) -> list[str]:
        return [f"{c.name}: {c.warning}" for c in self.checks if c.warning]

    @property
    def reasons(self) -> list[str]:
        """Why: the detail of each failed check, or a one-line summary when all passed."""
        if self.passed and not self.checks:
            return ["no gate checks configured"]
        if self.passed:
            return [f"all {len(self.checks)} checks passed"]
        return [c.detail for c in self.checks if not c.passed]

    def decision(self, champion_version: str | None) -> str:
        """"promoted to champion" or "refused, kept champion vN because …"."""
        return decision(self.passed, champion_version, self.reasons)


def _floor_check(candidate: dict[str, float], name: str, floor: float,
                 evidence: Evidence) -> Check:
    check_name = f"floor:{name}"
    value = metric_value(candidate, name)
    if value is None:
        return Check(check_name, False, f"{unusable(candidate, name)} (floor {floor:.3f})")
    return _floor_verdict(check_name, name, value, floor, evidence)


def _floor_verdict(check_name: str, name: str, value: float, floor: float,
                   evidence: Evidence) -> Check:
    """floors_on "point": value >= floor; "lower": lower one-sided bound >= floor."""
    c = evidence.confidence
    values = evidence.samples.metric(name) if evidence.samples else None
    interval = two_sided(values, c) if values is not None else None
    text = f"{name} {value:.3f}" + (f" ({span(interval, c, '.3f')})" if interval else "")
    judged, rule = value, "point estimate >= floor"
    if evidence.floors_on == "lower" and values is not None:
        judged, rule = lower_bound(values, c), f"lower one-sided {c:.0%} bound >= floor"
        text += f", lower {c:.0%} bound {judged:.3f}"
    elif evidence.floors_on == "lower":
        rule = f"estimate >= floor ({evidence.point_only(name)})"
        text += f" ({evidence.point_only(name)})"
    ok = judged >= floor
    return Check(check_name, ok, f"{text} {'>=' if ok else '<'} floor {floor:.3f}", value,
                 interval.low if interval else None, interval.high if interval else None, rule)


def _regression_check(candidate: dict[str, float], champion: dict[str, float] | None,
                      name: str, max_drop: float, evidence: Evidence) -> Check:
    check_name = f"no-regression:{name}"
    value = metric_value(candidate, name)
    if value is None:
        return Check(check_name, False,
                     f"{unusable(candidate, name)} (max drop {max_drop:.3f} vs champion)")
    if champion is None:
        return Check(check_name, True, f"{name} {value:.3f}: no champion yet")
    best = metric_value(champion, name)
    if best is None:
        # The champion is re-evaluated on the same split, so this means it cannot be
        # measured on this metric; there is nothing to regress from (recorded, visible).
        return Check(check_name, True,
                     f"{name} {value:.3f}: champion has no {name} to compare against")
    diffs = evidence.samples.difference(name) if evidence.samples else None
    if diffs is None:
        return _point_regression(check_name, name, value, best, max_drop,
                                 evidence.point_only(name))
    c, n = evidence.confidence, evidence.samples.n_paired
    interval, upper = two_sided(diffs, c), upper_bound(diffs, c)
    refused = upper < -max_drop - TOLERANCE
    text = (f"{name} {value:.3f} vs champion {best:.3f} (change {value - best:+.3f}, "
            f"{span(interval, c, '+.3f')}, max drop {max_drop:.3f})")
    if refused:
        text += (f": {c:.0%} confident it dropped more than that "
                 f"(upper {c:.0%} bound of the change {upper:+.3f})")
    elif value - best < -max_drop:
        text += f": dropped more than that, but not {c:.0%} confidently (upper bound {upper:+.3f})"
    warning = small_split(interval, max_drop, n, f"a drop of {max_drop:.3f}")
    rule = (f"refused iff {c:.0%} confident the drop exceeds max_drop "
            f"(upper one-sided {c:.0%} bound of the paired change < -max_drop)")
    return Check(check_name, not refused, with_warning(text, warning), value - best,
                 interval.low, interval.high, rule, warning)


def _point_regression(check_name: str, name: str, value: float, best: float,
                      max_drop: float, why: str) -> Check:
    drop, rule = best - value, f"change >= -max_drop ({why})"
    if value >= best - max_drop - TOLERANCE:
        return Check(check_name, True, f"{name} {value:.3f} vs champion {best:.3f} "
                     f"(change {-drop:+.3f}, max drop {max_drop:.3f}; {why})", -drop, rule=rule)
    return Check(check_name, False, f"{name} {value:.3f} dropped {drop:.3f} vs champion "
                 f"{best:.3f} (max drop {max_drop:.3f}; {why})", -drop, rule=rule)


def _class_floor_checks(candidate: dict[str, float], prefix: str, floor: float,
                        evidence: Evidence) -> list[Check]:
    prefix = prefix.rstrip("/")
    keys = [k for k in candidate if k.startswith(f"{prefix}/")]
    if not keys:
        return [Check(f"class-floor:{prefix}", False,
                      f"no {prefix}/<class> metrics in candidate metrics (floor {floor:.3f})")]
    checks = []
    for key in keys:
        check_name, cls = f"class-floor:{key}", key[len(prefix) + 1:]
        value = candidate[key]
        if value is None:
            checks.append(Check(check_name, False, f"{key} is None in candidate metrics"))
        elif math.isnan(float(value)):
            checks.append(Check(check_name, True, f"{key}: no {cls} objects in the test split"))
        else:
            checks.append(_floor_verdict(check_name, key, float(value), floor, evidence))
    return checks


def relative_drop(clean: float, corrupted: float) -> float:
    """(clean - corrupted) / clean; 0 when nothing was lost, inf when a 0 score fell further."""
    if clean > 0:
        return (clean - corrupted) / clean
    return 0.0 if corrupted >= clean else math.inf


def _robust_check(candidate: dict[str, float], corrupted: dict[str, float] | None,
                  name: str, severity: int, cfg: RobustnessConfig, evidence: Evidence) -> Check:
    check_name, metric, limit = f"robust:{name}", cfg.metric, cfg.max_relative_drop
    where = f"{name} (severity {severity})"
    clean = metric_value(candidate, metric)
    if clean is None:
        return Check(check_name, False, f"{where}: clean {unusable(candidate, metric)}")
    if corrupted is None:
        return Check(check_name, False, f"{where}: not evaluated on this corruption")
    value = metric_value(corrupted, metric)
    if value is None:
        what = "missing from" if corrupted.get(metric) is None else "NaN in"
        return Check(check_name, False, f"{where}: {metric} {what} the corrupted-split metrics")
    drop = relative_drop(clean, value)
    text = f"{where}: {metric} {value:.3f} vs clean {clean:.3f} (relative drop {drop:.1%}"
    drops = evidence.samples.relative_drop(name, metric) if evidence.samples else None
    if drops is None:
        why = evidence.point_only(f"{metric} on {name}")
        return Check(check_name, drop <= limit + TOLERANCE, f"{text}, max {limit:.1%}; {why})",
                     drop, rule=f"relative drop <= max ({why})")
    c = evidence.confidence
    interval, lower = two_sided(drops, c), lower_bound(drops, c)
    refused = lower > limit + TOLERANCE
    text += f", {span(interval, c, '.1%')}, max {limit:.1%})"
    if refused:
        text += (f": {c:.0%} confident it drops more than that "
                 f"(lower {c:.0%} bound {lower:.1%})")
    warning = small_split(interval, limit, evidence.samples.n_images,
                           f"a relative drop of {limit:.1%}")
    rule = (f"refused iff {c:.0%} confident the relative drop exceeds the max "
            f"(lower one-sided {c:.0%} bound of the paired relative drop > max)")
    return Check(check_name, not refused, with_warning(text, warning), drop,
                 interval.low, interval.high, rule, warning)


def _robustness_checks(candidate: dict[str, float],
                       robustness: dict[str, dict[str, float]] | None,
                       cfg: RobustnessConfig | None, evidence: Evidence) -> list[Check]:
    if cfg is None or not cfg.corruptions:
        return []
    if robustness is None:
        return [Check(f"robust:{name}", False, f"{name} (severity {sev}): robustness not evaluated")
                for name, sev in cfg.corruptions.items()]
    return [_robust_check(candidate, robustness.get(name), name, sev, cfg, evidence)
            for name, sev in cfg.corruptions.items()]


def _data_quality_check(quarantine: QuarantineSummary | None, bound: float | None) -> list[Check]:
    if bound is None:
        return []
    if quarantine is None:
        return [Check("data-quality", False, "no validation summary: quarantined share unknown")]
    share, n = float(quarantine.share), quarantine.quarantined
    ok = share <= bound + TOLERANCE  # "images" counts the kept ones
    return [Check("data-quality", ok, f"quarantined {n} of {quarantine.total} images "
                  f"({share:.1%}) {'<=' if ok else '>'} max {bound:.1%}", share,
                  rule="quarantined share <= max")]


def evaluate_gate(candidate: dict[str, float], champion: dict[str, float] | None,
                  cfg: GateConfig,
                  robustness: dict[str, dict[str, float]] | None = None,
                  quarantine: QuarantineSummary | None = None,
                  samples: GateSamples | None = None,
                  champion_problem: str | None = None,
                  compared: Compared | None = None) -> GateResult:
    """Floors, per-class floors, non-regression, robustness, data quality; passed = all pass.

    With no champion the non-regression checks pass with detail "no champion yet".
    ``robustness`` maps a corruption name to the candidate's metrics on that corrupted
    copy of the test split; a configured corruption without metrics fails its check.
    ``quarantine`` is validation's summary of what it left out. ``samples``: paired
    bootstrap samples of the gated metrics (module docstring); None judges point estimates.
    ``champion_problem``: why the current champion could not be re-scored — then there is
    nothing to compare against, and the candidate is never promoted automatically.
    ``compared``: the class lists differ (visiongate.class_changes); non-regression judges
    the candidate's metrics on the comparison view, and a "classes" line says what changed.
    """
    evidence = Evidence(samples, cfg.confidence, cfg.floors_on)
    checks = [_floor_check(candidate, name, floor, evidence)
              for name, floor in cfg.floors.items()]
    for prefix, floor in cfg.class_floors.items():
        checks += _class_floor_checks(candidate, prefix, floor, evidence)
    versus = compared.metrics if compared is not None else candidate
    checks += [_regression_check(versus, champion, name, drop, evidence)
               for name, drop in cfg.max_drop.items()]
    checks += _robustness_checks(candidate, robustness, cfg.robustness, evidence)
    checks += _data_quality_check(quarantine, cfg.max_quarantine_share)
    if compared is not None:
        checks.append(Check("classes", True, compared.note))
    if champion_problem:
        checks.append(Check("champion", False, f"the champion could not be re-scored "
                            f"({champion_problem}); review this report and promote by hand "
                            "(`visiongate promote`) if the candidate should replace it"))
    return GateResult(all(c.passed for c in checks), tuple(checks),
                      cfg.confidence if samples is not None else None,
                      metric_intervals(samples, cfg.confidence) if samples is not None else ())
