"""What the retrain chain hands from step to step and returns: small frozen records (no
models, no arrays), and the one wording of a gate decision."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from visiongate.vocab import HEADLINE_METRICS

if TYPE_CHECKING:
    from visiongate.gates import GateResult


@dataclass(frozen=True)
class QuarantineSummary:
    """What validation left out: `images` kept, `quarantined` images left out, their `share`
    of all images, and the number of quarantine lines of each kind."""

    images: int
    quarantined: int
    share: float
    by_kind: dict[str, int]

    @property
    def total(self) -> int:
        return self.images + self.quarantined


@dataclass(frozen=True)
class DatasetInfo:
    """The validated dataset a retrain trains on: its quarantine summary, per-split counts
    (flat metrics), the folder of its statistics plots and its quarantine report."""

    quarantine: QuarantineSummary
    counts: dict[str, float]
    stats_dir: str
    quarantine_csv: str


@dataclass(frozen=True)
class Insight:
    """What a run shows beside its numbers, as artifact paths relative to the run (None:
    switched off or nothing to show) and the first suspected label mistakes for the report
    (rows of suspects.csv: split, file, annotation, kind, score, detail)."""

    heatmaps: str | None = None
    test_map: str | None = None
    embeddings: str | None = None
    suspects: str | None = None
    suspects_count: int = 0          # rows ranked (the lowest 1,000 at most)
    suspects_flagged: int = 0        # rows below suspects_csv.ISSUE_SCORE
    top_suspects: tuple[tuple[str, ...], ...] = ()
    problems: tuple[str, ...] = ()  # parts that failed (a warning, never a refusal)


Status = Literal["promoted", "refused", "unchanged"]


@dataclass(frozen=True)
class Outcome:
    """One model task's result of a retrain. `champion_version` is the champion the
    candidate was compared with (for "unchanged": the current one); `verdict` is None when
    nothing was retrained."""

    name: str
    status: Status
    version: str
    champion_version: str | None = None
    metrics: dict[str, float] | None = None
    champion_metrics: dict[str, float] | None = None
    verdict: GateResult | None = None
    run_id: str | None = None

    @property
    def refused(self) -> bool:
        return self.status == "refused"

    @property
    def decision(self) -> str:
        """What happened, in the words the logs, the summary and the report use."""
        if self.status == "unchanged":
            return (f"nothing changed since v{self.version} (data md5s, params, code) — not "
                    f"retrained; champion {_version(self.champion_version)} stays "
                    "(--force retrains anyway)")
        assert self.verdict is not None
        return decision(self.verdict.passed, self.champion_version, self.verdict.reasons)

    def describe(self) -> str:
        """One line: the model (and its new version) and the decision."""
        where = self.name if self.status == "unchanged" else f"{self.name} v{self.version}"
        return f"{where}: {self.decision}"


@dataclass(frozen=True)
class ChampionCheck:
    """A champion re-scored on the current pinned test split against its floors."""

    name: str
    version: str
    metrics: dict[str, float]
    verdict: GateResult


def decision(passed: bool, champion_version: str | None, reasons: Iterable[str]) -> str:
    """The one wording of a gate decision."""
    if passed:
        return "promoted to champion"
    why = "; ".join(reasons)
    if champion_version:
        return f"refused, kept champion v{champion_version} because {why}"
    return f"refused (no champion yet) because {why}"


def exit_code(outcomes: Iterable[Outcome], refused: int = 3) -> int:
    """0, or `refused` when a gate refused at least one candidate (the champion was kept)."""
    return refused if any(o.refused for o in outcomes) else 0


def _version(version: str | None) -> str:
    return f"v{version}" if version else "none"


def summary(outcomes: list[Outcome], uri: str) -> str:
    """The retrain's closing text: each model's outcome and how to open the MLflow UI."""
    lines = ["", "=" * 72, "visiongate retrain — results", "=" * 72]
    for o in outcomes:
        if o.status == "unchanged":
            lines.append(o.describe())
            continue
        from visiongate import registry  # MLflow: not needed when nothing changed

        aliases = registry.get(uri, o.name, o.version).aliases
        headline = ", ".join(f"{k}={v:.3f}" for k, v in (o.metrics or {}).items()
                             if k in HEADLINE_METRICS)
        lines += [f"{o.name} v{o.version}  aliases: {', '.join(aliases) or '-'}",
                  f"  test metrics: {headline}", f"  gate: {o.decision}"]
    lines += ["", "Open the MLflow UI on these results:",
              f"  browse {uri}" if uri.startswith("http") else
              f"  mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000\n"
              "  then browse http://127.0.0.1:5000", "=" * 72]
    return "\n".join(lines)
