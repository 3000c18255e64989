"""The promotion gate: a pure function of (candidate, champion, thresholds).

Floors: ``candidate[m] >= floor``. Non-regression: ``candidate[m] >= champion[m] -
max_drop`` for each metric in ``cfg.max_drop``; both sets of metrics are expected to
come from the same pinned test split, evaluated now. A gated metric that the candidate
lacks, or that is NaN, fails its check: a gate never passes on a number it did not see.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from visiongate.config import GateConfig

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


def evaluate_gate(candidate: dict[str, float], champion: dict[str, float] | None,
                  cfg: GateConfig) -> GateResult:
    """Every floor, then every non-regression check, in config order; passed = all pass.

    With no champion the non-regression checks pass with detail "no champion yet".
    """
    checks = [_floor_check(candidate, name, floor) for name, floor in cfg.floors.items()]
    checks += [_regression_check(candidate, champion, name, drop)
               for name, drop in cfg.max_drop.items()]
    return GateResult(passed=all(c.passed for c in checks), checks=tuple(checks))
