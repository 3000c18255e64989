"""Bounds and intervals the gate reads from paired bootstrap samples.

A sample array holds one value of a metric per bootstrap resample of the test images
(`visiongate.bootstrap.metric_samples`). The candidate, the champion and the candidate on
each corrupted copy are resampled with ONE counts matrix, so their arrays are paired:
index k is the same multiset of test images for all of them, and a per-resample
difference cancels what the images share (how hard they are). Percentile bootstrap:

    two-sided c interval   [quantile((1 - c) / 2), quantile((1 + c) / 2)]
    lower one-sided bound  quantile(1 - c)      (the value is above it with confidence c)
    upper one-sided bound  quantile(c)          (the value is below it with confidence c)

NaN samples (a metric undefined on that resample, e.g. a class drawn out of it) are left
out; a metric defined on fewer than half of the resamples has no usable samples.
`load_gate_samples` is the one reader of per-image record files (`visiongate.bootstrap`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from visiongate.errors import DataError

if TYPE_CHECKING:
    from visiongate.config import GateConfig


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def usable(values: np.ndarray | None) -> np.ndarray | None:
    """The finite samples, or None when there are none or most resamples are undefined."""
    if values is None:
        return None
    values = np.asarray(values, dtype=float)
    kept = values[np.isfinite(values)]
    return kept if kept.size and 2 * kept.size >= values.size else None


def lower_bound(values: np.ndarray, confidence: float) -> float:
    return float(np.quantile(values, 1 - confidence))


def upper_bound(values: np.ndarray, confidence: float) -> float:
    return float(np.quantile(values, confidence))


def two_sided(values: np.ndarray, confidence: float) -> Interval:
    low, high = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(float(low), float(high))


def relative_drops(clean: np.ndarray, corrupted: np.ndarray) -> np.ndarray:
    """(clean - corrupted) / clean per resample; 0 where a 0 clean score did not fall."""
    clean, corrupted = np.asarray(clean, float), np.asarray(corrupted, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        drops = (clean - corrupted) / clean
    return np.where(clean > 0, drops, np.where(corrupted >= clean, 0.0, np.inf))


def n_needed(n_images: int, half_width: float, tolerance: float) -> int | None:
    """Test images needed for an interval half as wide as `tolerance`, at the observed
    variance (half-width shrinks as 1/sqrt(n)); None for a zero tolerance."""
    if tolerance <= 0:
        return None
    return math.ceil(n_images * (half_width / tolerance) ** 2)


@dataclass(frozen=True, eq=False)
class GateSamples:
    """Paired samples of the gated metrics: `candidate[name]`, `champion[name]` and
    `corrupted[corruption][name]`, each (R,) from one counts matrix over `n_images`."""

    n_images: int
    candidate: Mapping[str, np.ndarray]
    champion: Mapping[str, np.ndarray] | None = None
    corrupted: Mapping[str, Mapping[str, np.ndarray]] = field(default_factory=dict)
    # when the class lists differ: the candidate on the comparison view (visiongate.
    # class_changes), paired with `champion` by a counts matrix over its n_compared images
    compared: Mapping[str, np.ndarray] | None = None
    n_compared: int | None = None

    @property
    def n_paired(self) -> int:
        """Test images behind `difference`."""
        return self.n_compared if self.compared is not None else self.n_images

    def metric(self, name: str) -> np.ndarray | None:
        return usable(self.candidate.get(name))

    def difference(self, name: str) -> np.ndarray | None:
        """candidate - champion per resample (on the comparison view when there is one)."""
        mine = self.compared if self.compared is not None else self.candidate
        if self.champion is None or name not in self.champion or name not in mine:
            return None
        return usable(np.asarray(mine[name], float) - self.champion[name])

    def relative_drop(self, corruption: str, name: str) -> np.ndarray | None:
        corrupted = self.corrupted.get(corruption, {})
        if name not in corrupted or name not in self.candidate:
            return None
        return usable(relative_drops(self.candidate[name], corrupted[name]))


@dataclass(frozen=True)
class MetricInterval:
    """Two-sided interval of a gated metric, and of its change vs the champion."""

    name: str
    low: float
    high: float
    delta_low: float | None = None
    delta_high: float | None = None


def metric_intervals(samples: GateSamples, confidence: float) -> tuple[MetricInterval, ...]:
    out = []
    for name in samples.candidate:
        values = samples.metric(name)
        if values is None:
            continue
        interval, diff = two_sided(values, confidence), samples.difference(name)
        delta = two_sided(diff, confidence) if diff is not None else None
        out.append(MetricInterval(name, interval.low, interval.high,
                                  delta.low if delta else None, delta.high if delta else None))
    return tuple(out)


@dataclass(frozen=True)
class GatedNames:
    """The metrics the gate needs samples of, per evaluated model."""

    candidate: tuple[str, ...]
    champion: tuple[str, ...]
    corrupted: tuple[str, ...]


def gated_names(cfg: GateConfig, candidate_metrics: Mapping[str, float]) -> GatedNames:
    per_class = [k for prefix in cfg.class_floors for k in candidate_metrics
                 if k.startswith(f"{prefix.rstrip('/')}/")]
    robust = [cfg.robustness.metric] if cfg.robustness and cfg.robustness.corruptions else []
    return GatedNames(tuple(dict.fromkeys([*cfg.floors, *cfg.max_drop, *per_class, *robust])),
                      tuple(cfg.max_drop), tuple(robust))


@dataclass(frozen=True)
class RecordFiles:
    """Where evaluation wrote the per-image records of one gate decision (.npz paths)."""

    candidate: str
    champion: str | None = None
    corrupted: Mapping[str, str] = field(default_factory=dict)
    compared: str | None = None  # the candidate on the comparison view (class lists differ)

    @classmethod
    def in_dir(cls, folder: str | Path, champion: bool, corruptions: list[str],
               compared: bool = False) -> RecordFiles:
        folder = Path(folder)
        return cls(str(folder / "candidate.npz"), str(folder / "champion.npz") if champion
                   else None, {c: str(folder / "corrupted" / f"{c}.npz") for c in corruptions},
                   str(folder / "compared.npz") if compared else None)

    @property
    def corrupted_dir(self) -> str:
        return str(Path(self.candidate).parent / "corrupted")


def load_gate_samples(files: RecordFiles, cfg: GateConfig,
                      candidate_metrics: Mapping[str, float]) -> GateSamples | None:
    """Samples of the gated metrics from one shared counts matrix
    (`resample_counts(n, cfg.resamples, cfg.seed)`), or None without candidate records
    (the gate then judges point estimates). A missing champion or corrupted file leaves
    that part out; records of different test images are a DataError."""
    from visiongate import bootstrap

    if not Path(files.candidate).is_file():
        return None
    names = gated_names(cfg, candidate_metrics)
    candidate = bootstrap.Records.load(files.candidate)
    counts = bootstrap.resample_counts(len(candidate.image_ids), cfg.resamples, cfg.seed)

    def samples(records, wanted: tuple[str, ...], draws=counts) -> dict[str, np.ndarray]:
        classes = {str(c) for c in records.arrays["class_names"]}
        # the rest (map_small, mar100 ...; a class the records lack) is judged on points
        known = [n for n in wanted if bootstrap.is_supported(records.kind, n)
                 and ("/" not in n or n.split("/", 1)[1] in classes)]
        return bootstrap.metric_samples(records, draws, known) if known else {}

    def paired(path: str | None, wanted: tuple[str, ...], base=candidate, base_path=None,
               draws=counts) -> dict[str, np.ndarray] | None:
        if path is None or not Path(path).is_file():
            return None
        records = bootstrap.Records.load(path)
        if tuple(records.image_ids) != tuple(base.image_ids):
            raise DataError(f"{path} holds other test images than "
                            f"{base_path or files.candidate}: a paired bootstrap needs the "
                            "same split")
        return samples(records, wanted, draws)

    corrupted = {c: paired(p, names.corrupted) for c, p in files.corrupted.items()}
    compared = n_compared = None
    if files.compared is None or not Path(files.compared).is_file():
        champion = paired(files.champion, names.champion)
    else:
        view = bootstrap.Records.load(files.compared)
        n_compared = len(view.image_ids)
        draws = bootstrap.resample_counts(n_compared, cfg.resamples, cfg.seed)
        compared = samples(view, names.champion, draws)
        champion = paired(files.champion, names.champion, view, files.compared, draws)
    return GateSamples(len(candidate.image_ids), samples(candidate, names.candidate),
                       champion, {c: s for c, s in corrupted.items() if s is not None},
                       compared, n_compared)
