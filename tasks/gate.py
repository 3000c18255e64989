from prefect import task
from prefect.artifacts import create_markdown_artifact

from visiongate.gates import evaluate_gate
from visiongate.report import gate_report


@task
def gate(name: str, candidate: dict, champion: dict | None, champion_version: str | None,
         cfg, lineage: dict[str, str], robustness: dict | None = None,
         quarantine: dict | None = None, plots: list[str] | None = None,
         run_id: str | None = None) -> tuple[dict, str]:
    """Decide promotion; publish the report as a Prefect artifact; return (verdict, report)."""
    result = evaluate_gate(candidate, champion, cfg, robustness, quarantine)
    report = gate_report(name, candidate, champion, champion_version, result, lineage,
                         robustness, cfg.robustness, plots, run_id)
    create_markdown_artifact(report, key=f"gate-report-{name}".lower(), description=f"gate: {name}")
    return result.to_dict(), report
