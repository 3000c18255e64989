"""MLflow tracking tasks: retried, since a tracking server can blink."""

import math
import os
from pathlib import Path

from uuid import UUID

from prefect import get_client, get_run_logger, runtime, task
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed

from visiongate import tracking
from visiongate.errors import ConfigError, VisiongateError
from visiongate.export import Deployment
from visiongate.gates import GateResult
from visiongate.outcomes import QuarantineSummary


def _retry_delays(value: str) -> list[float]:
    try:
        return [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"VISIONGATE_IO_RETRY_DELAYS={value!r}: expected comma-separated "
                          "seconds, e.g. 2,10,30") from None


# Retries of every MLflow I/O task (here and in tasks/registry.py): one retry per delay, the
# delays in seconds. Default 2, 10, 30 s (three retries over ~40 s: a server restart or a
# network blink). VISIONGATE_IO_RETRY_DELAYS overrides them, comma-separated ("0.5,0.5": two
# quick retries, as tests use; "": none); read once, when this module is imported.
_DELAYS = _retry_delays(os.environ.get("VISIONGATE_IO_RETRY_DELAYS", "2,10,30"))


def transient(task, task_run, state) -> bool:
    """Retry what may pass (a server blinking), not a user-facing error (an unknown model, a
    refused checkpoint): that one fails at once with its own message."""
    error = state.data if isinstance(state.data, BaseException) else \
        state.result(raise_on_failure=False)
    return not isinstance(error, VisiongateError)


IO = {"retries": len(_DELAYS), "retry_delay_seconds": _DELAYS, "retry_condition_fn": transient}


@task(**IO)
def start_run(uri: str, experiment_id: str, run_name: str, params: dict, tags: dict) -> str:
    flow_run = runtime.flow_run.id
    return tracking.start_run(uri, experiment_id, run_name, params,
                              {**tags, **({tracking.FLOW_RUN_TAG: flow_run} if flow_run else {})})


@task(**IO)
def close_orphans(uri: str, experiment_id: str) -> list[str]:
    """MLflow runs left RUNNING by a process that died (tracking.close_orphans): FAILED, and
    their Prefect flow runs, where this Prefect server knows them and they are not final,
    Crashed, each with the reason. Returns the MLflow run ids."""
    closed = tracking.close_orphans(uri, experiment_id)
    for run_id, flow_run_id, reason in closed:
        get_run_logger().warning("MLflow run %s: %s", run_id, reason)
        if flow_run_id:
            with get_client(sync_client=True) as client:
                try:
                    flow_run = client.read_flow_run(UUID(flow_run_id))
                except (ObjectNotFound, ValueError):
                    continue
                if flow_run.state is None or not flow_run.state.is_final():
                    client.set_flow_run_state(flow_run.id, Crashed(message=reason), force=True)
    return [run_id for run_id, _, _ in closed]


@task(**IO)
def log_results(uri: str, run_id: str, metrics: dict, verdict: GateResult, report: str,
                robustness: dict | None = None, plots_dir: str | None = None) -> None:
    """Test metrics (clean and corrupted), gate verdict, report and its plots."""
    tracking.log_metrics(uri, run_id, {f"test/{k}": v for k, v in metrics.items()})
    for corruption, corrupted in (robustness or {}).items():
        tracking.log_metrics(uri, run_id, {f"robust/{corruption}/{k}": v
                                           for k, v in corrupted.items() if "/" not in k})
    tracking.set_tags(uri, run_id, {"gate.passed": str(verdict.passed).lower(),
                                    "gate.reasons": "; ".join(verdict.reasons)[:5000]})
    tracking.log_text(uri, run_id, report, "gate_report.md")
    if plots_dir and Path(plots_dir).is_dir():
        tracking.log_artifacts(uri, run_id, Path(plots_dir), "plots")


@task(**IO)
def log_dataset(uri: str, run_id: str, counts: dict, quarantine: QuarantineSummary, stats_dir: str,
                quarantine_csv: str) -> None:
    """Dataset counts and quarantine summary as metrics; its plots and quarantine report
    as artifacts under `data/`."""
    tracking.log_metrics(uri, run_id, {**{f"data/{k}": v for k, v in counts.items()},
                                       "data/quarantined": quarantine.quarantined,
                                       "data/quarantine_share": quarantine.share})
    tracking.log_artifacts(uri, run_id, Path(stats_dir), "data")
    if Path(quarantine_csv).is_file():
        tracking.log_artifact(uri, run_id, Path(quarantine_csv), "data")


@task(**IO)
def log_insight(uri: str, run_id: str, insight_dir: str) -> None:
    """The run's test-split embeddings (`map/`) and suspected label mistakes (`suspects/`)."""
    for part in ("map", "suspects"):
        if (Path(insight_dir) / part).is_dir():
            tracking.log_artifacts(uri, run_id, Path(insight_dir) / part, part)


@task(**IO)
def log_evaluation(uri: str, experiment_id: str, name: str, version: str, md5s: dict,
                   metrics: dict, verdict: GateResult) -> str:
    """An MLflow run `evaluate <name> v<version>`: a registered version re-scored on the
    current pinned test split (the weekly check)."""
    tags = {"model_name": name, "model_version": version, "kind": "evaluation",
            "gate.floors_passed": str(verdict.passed).lower(),
            **{f"data.md5.{split}": md5 for split, md5 in md5s.items()}}
    run_id = tracking.start_run(uri, experiment_id, f"evaluate {name} v{version}", {}, tags)
    tracking.log_metrics(uri, run_id, {f"test/{k}": v for k, v in metrics.items()})
    tracking.end_run(uri, run_id)
    return run_id


@task(**IO)
def log_deployment(uri: str, run_id: str, deployment: Deployment) -> None:
    """Latency per runtime, parity differences and the chosen runtime on the MLflow run."""
    values = {"serve/torch_ms": deployment.torch_ms}
    for check in deployment.checks:
        values[f"serve/{check.runtime}_ms"] = check.ms_per_image
        values |= {f"parity/{check.runtime}/{k}": v for k, v in check.deltas.items()}
    tracking.log_metrics(uri, run_id, {k: v for k, v in values.items()
                                       if v is not None and math.isfinite(v)})
    tracking.set_tags(uri, run_id, {"serve.runtime": deployment.runtime, **{
        f"serve.{c.runtime}": "passed" if c.passed else f"refused: {c.problem}"[:500]
        for c in deployment.checks}})
