"""The promotion gate: a pure function of (candidate, champion, thresholds).

Floors: ``candidate[m] >= floor``. Non-regression: ``candidate[m] >= champion[m] -
max_drop`` for each metric in ``cfg.max_drop``; both sets of metrics are expected to
come from the same pinned test split, evaluated now. A gated metric that the candidate
lacks, or that is NaN, fails its check: a gate never passes on a number it did not see.

Per-class floors: ``candidate[f"{prefix}/{class}"] >= floor`` for every per-class key of
each prefix in ``cfg.class_floors`` (``ap`` for detection, ``iou`` for semantic). A NaN
per-class value means the class has no objects in the test split: nothing to judge, so
that check passes and says so. A prefix with no per-class keys at all fails.

Robustness: for each corruption in ``cfg.robustness``, the candidate's metric on the
corrupted copy of the test split may fall at most ``max_relative_drop`` (a fraction)
below its clean value: ``(clean - corrupted) / clean <= max_relative_drop``.

Data quality: the share of the dataset's images that validation quarantined may be at
most ``cfg.max_quarantine_share``; a configured bound without a validation summary fails.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from visiongate.config import GateConfig, RobustnessConfig

# Float slack so that a drop of exactly max_drop (0.82 -> 0.79 with 0.03) passes.
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateResult:
    passed: bool
    checks: tuple[Check, ...]

    @property
    def reasons(self) -> list[str]:
        """Why: the detail of each failed check, or a one-line summary when all passed."""
        if self.passed and not self.checks:
            return ["no gate checks configured"]
        if self.passed:
            return [f"all {len(self.checks)} checks passed"]
        return [c.detail for c in self.checks if not c.passed]

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reasons": self.reasons,
                "checks": [asdict(c) for c in self.checks]}


def _value(metrics: dict[str, float], name: str) -> float | None:
    """The metric as a finite-or-inf float, or None when missing / None / NaN."""
    value = metrics.get(name)
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _unusable(metrics: dict[str, float], name: str) -> str:
    if metrics.get(name) is None:
        return f"{name} missing from candidate metrics"
    return f"{name} is NaN in candidate metrics"


def _floor_check(candidate: dict[str, float], name: str, floor: float) -> Check:
    check_name = f"floor:{name}"
    value = _value(candidate, name)
    if value is None:
        return Check(check_name, False, f"{_unusable(candidate, name)} (floor {floor:.3f})")
    if value >= floor:
        return Check(check_name, True, f"{name} {value:.3f} >= floor {floor:.3f}")
    return Check(check_name, False, f"{name} {value:.3f} < floor {floor:.3f}")


def _regression_check(candidate: dict[str, float], champion: dict[str, float] | None,
                      name: str, max_drop: float) -> Check:
    check_name = f"no-regression:{name}"
    value = _value(candidate, name)
    if value is None:
        return Check(check_name, False,
                     f"{_unusable(candidate, name)} (max drop {max_drop:.3f} vs champion)")
    if champion is None:
        return Check(check_name, True, f"{name} {value:.3f}: no champion yet")
    best = _value(champion, name)
    if best is None:
        # The champion is re-evaluated on the same split, so this means it cannot be
        # measured on this metric; there is nothing to regress from (recorded, visible).
        return Check(check_name, True,
                     f"{name} {value:.3f}: champion has no {name} to compare against")
    drop = best - value
    if value >= best - max_drop - _TOLERANCE:
        return Check(check_name, True,
                     f"{name} {value:.3f} vs champion {best:.3f} "
                     f"(change {-drop:+.3f}, max drop {max_drop:.3f})")
    return Check(check_name, False,
                 f"{name} {value:.3f} dropped {drop:.3f} vs champion {best:.3f} "
                 f"(max drop {max_drop:.3f})")


def _class_floor_checks(candidate: dict[str, float], prefix: str, floor: float) -> list[Check]:
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
        elif float(value) >= floor:
            checks.append(Check(check_name, True, f"{key} {float(value):.3f} >= floor {floor:.3f}"))
        else:
            checks.append(Check(check_name, False, f"{key} {float(value):.3f} < floor {floor:.3f}"))
    return checks


def relative_drop(clean: float, corrupted: float) -> float:
    """(clean - corrupted) / clean; 0 when nothing was lost, inf when a 0 score fell further."""
    if clean > 0:
        return (clean - corrupted) / clean
    return 0.0 if corrupted >= clean else math.inf


def _robust_check(candidate: dict[str, float], corrupted: dict[str, float] | None,
                  name: str, severity: int, cfg: RobustnessConfig) -> Check:
    check_name, metric, limit = f"robust:{name}", cfg.metric, cfg.max_relative_drop
    where = f"{name} (severity {severity})"
    clean = _value(candidate, metric)
    if clean is None:
        return Check(check_name, False, f"{where}: clean {_unusable(candidate, metric)}")
    if corrupted is None:
        return Check(check_name, False, f"{where}: not evaluated on this corruption")
    value = _value(corrupted, metric)
    if value is None:
        what = "missing from" if corrupted.get(metric) is None else "NaN in"
        return Check(check_name, False, f"{where}: {metric} {what} the corrupted-split metrics")
    drop = relative_drop(clean, value)
    text = (f"{where}: {metric} {value:.3f} vs clean {clean:.3f} "
            f"(relative drop {drop:.1%}, max {limit:.1%})")
    return Check(check_name, drop <= limit + _TOLERANCE, text)


def _robustness_checks(candidate: dict[str, float],
                       robustness: dict[str, dict[str, float]] | None,
                       cfg: RobustnessConfig | None) -> list[Check]:
    if cfg is None or not cfg.corruptions:
        return []
    if robustness is None:
        return [Check(f"robust:{name}", False, f"{name} (severity {sev}): robustness not evaluated")
                for name, sev in cfg.corruptions.items()]
    return [_robust_check(candidate, robustness.get(name), name, sev, cfg)
            for name, sev in cfg.corruptions.items()]


def _data_quality_check(quarantine: dict | None, bound: float | None) -> list[Check]:
    if bound is None:
        return []
    if quarantine is None:
        return [Check("data-quality", False, "no validation summary: quarantined share unknown")]
    share, n = float(quarantine["share"]), quarantine["quarantined"]
    ok = share <= bound + _TOLERANCE  # "images" counts the kept ones
    return [Check("data-quality", ok, f"quarantined {n} of {quarantine['images'] + n} images "
                  f"({share:.1%}) {'<=' if ok else '>'} max {bound:.1%}")]


def evaluate_gate(candidate: dict[str, float], champion: dict[str, float] | None,
                  cfg: GateConfig,
                  robustness: dict[str, dict[str, float]] | None = None,
                  quarantine: dict | None = None) -> GateResult:
    """Floors, per-class floors, non-regression, robustness, data quality; passed = all pass.

    With no champion the non-regression checks pass with detail "no champion yet".
    ``robustness`` maps a corruption name to the candidate's metrics on that corrupted
    copy of the test split; a configured corruption without metrics fails its check.
    ``quarantine`` is validation's summary {"images", "quarantined", "share", ...}.
    """
    checks = [_floor_check(candidate, name, floor) for name, floor in cfg.floors.items()]
    for prefix, floor in cfg.class_floors.items():
        checks += _class_floor_checks(candidate, prefix, floor)
    checks += [_regression_check(candidate, champion, name, drop)
               for name, drop in cfg.max_drop.items()]
    checks += _robustness_checks(candidate, robustness, cfg.robustness)
    checks += _data_quality_check(quarantine, cfg.max_quarantine_share)
    return GateResult(passed=all(c.passed for c in checks), checks=tuple(checks))
