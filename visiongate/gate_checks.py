"""One promotion-gate check (visiongate.gates): its record, the evidence it reads (the
bootstrap samples, or point estimates without them) and the wording the rules share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from visiongate.gate_stats import GateSamples, Interval, n_needed

# Float slack so that a drop of exactly max_drop (0.82 -> 0.79 with 0.03) passes.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    estimate: float | None = None  # the number judged: metric, change, relative drop, share
    low: float | None = None       # its two-sided `confidence` interval (None: no bootstrap)
    high: float | None = None
    rule: str = ""                 # the rule applied, in words
    warning: str = ""              # the small-split warning, also in `detail`


def metric_value(metrics: dict[str, float], name: str) -> float | None:
    """The metric as a finite-or-inf float, or None when missing / None / NaN."""
    value = metrics.get(name)
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def unusable(metrics: dict[str, float], name: str) -> str:
    if metrics.get(name) is None:
        return f"{name} missing from candidate metrics"
    return f"{name} is NaN in candidate metrics"


@dataclass(frozen=True)
class Evidence:
    """The bootstrap samples (if any) and how the gate reads them."""

    samples: GateSamples | None
    confidence: float
    floors_on: str

    def point_only(self, name: str) -> str:
        """Why a check on `name` judges point estimates."""
        if self.samples is None:
            return "point estimates: no per-image records"
        return f"point estimates: no usable bootstrap samples of {name}"


def span(interval: Interval, confidence: float, fmt: str) -> str:
    return f"{confidence:.0%} interval [{interval.low:{fmt}}, {interval.high:{fmt}}]"


def small_split(interval: Interval, limit: float, n_images: int, what: str) -> str:
    """The warning when the interval is too wide to tell a drop of `limit` from noise
    (none for a limit of 0: any confident drop refuses, no split size is "enough")."""
    if limit <= 0 or interval.half_width <= limit:
        return ""
    return (f"test split too small to detect {what}: the interval's half-width is "
            f"{interval.half_width:.3f} on {n_images} images; about "
            f"{n_needed(n_images, interval.half_width, limit)} test images would be needed "
            "at this variance")


def with_warning(text: str, warning: str) -> str:
    return f"{text}; warning: {warning}" if warning else text
