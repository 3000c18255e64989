"""MLflow tracking tasks: retried, since a tracking server can blink."""

from pathlib import Path

from prefect import task

from visiongate import tracking

IO = {"retries": 3, "retry_delay_seconds": [2, 10, 30]}


@task(**IO)
def start_run(uri: str, experiment_id: str, run_name: str, params: dict, tags: dict) -> str:
    return tracking.start_run(uri, experiment_id, run_name, params, tags)


@task(**IO)
def log_results(uri: str, run_id: str, metrics: dict, verdict: dict, report: str,
                robustness: dict | None = None, plots_dir: str | None = None) -> None:
    """Test metrics (clean and corrupted), gate verdict, report and its plots."""
    tracking.log_metrics(uri, run_id, {f"test/{k}": v for k, v in metrics.items()})
    for corruption, corrupted in (robustness or {}).items():
        tracking.log_metrics(uri, run_id, {f"robust/{corruption}/{k}": v
                                           for k, v in corrupted.items() if "/" not in k})
    tracking.set_tags(uri, run_id, {"gate.passed": str(verdict["passed"]).lower(),
                                    "gate.reasons": "; ".join(verdict["reasons"])[:5000]})
    tracking.log_text(uri, run_id, report, "gate_report.md")
    if plots_dir and Path(plots_dir).is_dir():
        tracking.log_artifacts(uri, run_id, Path(plots_dir), "plots")


@task(**IO)
def log_dataset(uri: str, run_id: str, counts: dict, quarantine: dict, stats_dir: str,
                quarantine_csv: str) -> None:
    """Dataset counts and quarantine summary as metrics; its plots and quarantine report
    as artifacts under `data/`."""
    tracking.log_metrics(uri, run_id, {**{f"data/{k}": v for k, v in counts.items()},
                                       "data/quarantined": quarantine["quarantined"],
                                       "data/quarantine_share": quarantine["share"]})
    tracking.log_artifacts(uri, run_id, Path(stats_dir), "data")
    if Path(quarantine_csv).is_file():
        tracking.log_artifact(uri, run_id, Path(quarantine_csv), "data")
