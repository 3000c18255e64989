from prefect import task
from prefect.artifacts import create_markdown_artifact

from visiongate.gates import evaluate_gate
from visiongate.report import gate_report


@task
def gate(name: str, candidate: dict, champion: dict | None, champion_version: str | None,
         cfg, lineage: dict[str, str], robustness: dict | None = None) -> tuple[dict, str]:
    """Decide promotion; publish the report as a Prefect artifact; return (verdict, report)."""
    result = evaluate_gate(candidate, champion, cfg, robustness)
    report = gate_report(name, candidate, champion, champion_version, result, lineage,
                         robustness, cfg.robustness)
    create_markdown_artifact(report, key=f"gate-report-{name}".lower(), description=f"gate: {name}")
    return result.to_dict(), report
