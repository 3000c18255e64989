"""MLflow tracking tasks: retried, since a tracking server can blink."""

from prefect import task

from visiongate import tracking

IO = {"retries": 3, "retry_delay_seconds": [2, 10, 30]}


@task(**IO)
def start_run(uri: str, experiment_id: str, run_name: str, params: dict, tags: dict) -> str:
    return tracking.start_run(uri, experiment_id, run_name, params, tags)


@task(**IO)
def log_results(uri: str, run_id: str, metrics: dict, verdict: dict, report: str,
                robustness: dict | None = None) -> None:
    """Test metrics (clean and corrupted), gate verdict and report."""
    tracking.log_metrics(uri, run_id, {f"test/{k}": v for k, v in metrics.items()})
    for corruption, corrupted in (robustness or {}).items():
        tracking.log_metrics(uri, run_id, {f"robust/{corruption}/{k}": v
                                           for k, v in corrupted.items() if "/" not in k})
    tracking.set_tags(uri, run_id, {"gate.passed": str(verdict["passed"]).lower(),
                                    "gate.reasons": "; ".join(verdict["reasons"])[:5000]})
    tracking.log_text(uri, run_id, report, "gate_report.md")
