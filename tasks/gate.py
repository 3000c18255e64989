from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from visiongate.config import GateConfig
from visiongate.gates import GateResult, evaluate_gate
from visiongate.outcomes import QuarantineSummary
from visiongate.report import gate_report


@task
def gate(name: str, candidate: dict, champion: dict | None, champion_version: str | None,
         cfg: GateConfig, lineage: dict[str, str], robustness: dict | None = None,
         quarantine: QuarantineSummary | None = None, plots: list[str] | None = None,
         run_id: str | None = None) -> tuple[GateResult, str]:
    """Decide promotion; publish the report as a Prefect artifact; return (verdict, report)."""
    result = evaluate_gate(candidate, champion, cfg, robustness, quarantine)
    report = gate_report(name, candidate, champion, champion_version, result, lineage,
                         robustness, cfg.robustness, plots, run_id)
    create_markdown_artifact(report, key=f"gate-report-{name}".lower(), description=f"gate: {name}")
    publish_metrics_table(name, candidate, champion, f"candidate vs champion v{champion_version}"
                          if champion_version else "candidate (no champion yet)")
    return result, report


@task
def floor_check(metrics: dict, cfg: GateConfig) -> GateResult:
    """The gate's floors and per-class floors alone (no candidate to compare, no corruptions)."""
    floors_only = cfg.model_copy(update={"max_drop": {}, "robustness": None,
                                         "max_quarantine_share": None})
    return evaluate_gate(metrics, None, floors_only)


def publish_metrics_table(name: str, metrics: dict, champion: dict | None, description: str) -> None:
    """Prefect table artifact `metrics-<name>`: each metric, with the champion's and the
    difference when there is one (NaN, an undefined metric, shows empty)."""
    def cell(value):
        return None if value is None or value != value else round(float(value), 4)

    rows = [{"metric": k, "value": cell(v),
             **({"champion": cell(champion.get(k)), "delta": cell(
                 v - champion[k] if k in champion else None)} if champion is not None else {})}
            for k, v in sorted(metrics.items())]
    create_table_artifact(rows, key=f"metrics-{name}".lower(), description=description)
