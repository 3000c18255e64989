import math

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from visiongate.class_changes import Compared
from visiongate.config import GateConfig
from visiongate.export import Deployment
from visiongate.gate_stats import MetricInterval, RecordFiles, load_gate_samples
from visiongate.gates import GateResult, evaluate_gate
from visiongate.outcomes import Insight, QuarantineSummary
from visiongate.report import gate_report


@task
def gate(name: str, candidate: dict, champion: dict | None, champion_version: str | None,
         cfg: GateConfig, lineage: dict[str, str], robustness: dict | None = None,
         quarantine: QuarantineSummary | None = None, plots: list[str] | None = None,
         run_id: str | None = None, records: RecordFiles | None = None,
         champion_problem: str | None = None,
         insight: Insight | None = None,
         deployment: Deployment | None = None,
         compared: Compared | None = None) -> tuple[GateResult, str]:
    """Decide promotion (paired bootstrap over the evaluations' per-image `records`; point
    estimates without them); publish the report as a Prefect artifact; return (verdict, report)."""
    samples = load_gate_samples(records, cfg, candidate) if records else None
    result = evaluate_gate(candidate, champion, cfg, robustness, quarantine, samples,
                           champion_problem, compared)
    report = gate_report(name, candidate, champion, champion_version, result, lineage,
                         robustness, cfg.robustness, plots, run_id, insight, deployment,
                         compared)
    create_markdown_artifact(report, key=f"gate-report-{name}".lower(), description=f"gate: {name}")
    publish_metrics_table(name, candidate, champion, f"candidate vs champion v{champion_version}"
                          if champion_version else "candidate (no champion yet)", result,
                          compared.metrics if compared is not None else None)
    return result, report


@task
def floor_check(metrics: dict, cfg: GateConfig) -> GateResult:
    """The gate's floors and per-class floors alone (no candidate to compare, no corruptions)."""
    floors_only = cfg.model_copy(update={"max_drop": {}, "robustness": None,
                                         "max_quarantine_share": None})
    return evaluate_gate(metrics, None, floors_only)


def publish_metrics_table(name: str, metrics: dict, champion: dict | None, description: str,
                          result: GateResult | None = None, versus: dict | None = None) -> None:
    """Prefect table artifact `metrics-<name>`: each metric with its bootstrap interval
    (`low`/`high`: gated metrics), and the champion's, the difference and its interval
    (`delta_low`/`delta_high`) when there is one; `versus`: the candidate's metrics the
    deltas use (the comparison view when the class lists differ). NaN shows empty."""
    intervals = {i.name: i for i in (result.intervals if result else ())}
    versus = metrics if versus is None else versus
    rows = [_row(k, v, champion, intervals.get(k), versus.get(k))
            for k, v in sorted(metrics.items())]
    create_table_artifact(rows, key=f"metrics-{name}".lower(), description=description)


def _row(metric: str, value, champion: dict | None, interval: MetricInterval | None,
         compared: float | None = None) -> dict:
    compared = value if compared is None else compared
    row = {"metric": metric, "value": _cell(value), "low": _cell(interval and interval.low),
           "high": _cell(interval and interval.high)}
    if champion is not None:
        row |= {"champion": _cell(champion.get(metric)),
                "delta": _cell(compared - champion[metric] if metric in champion else None),
                "delta_low": _cell(interval and interval.delta_low),
                "delta_high": _cell(interval and interval.delta_high)}
    return row


def _cell(value):
    return None if value is None or math.isnan(value) else round(float(value), 4)
