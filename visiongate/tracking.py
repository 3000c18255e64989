"""MLflow tracking edge: runs, params, metrics, artifacts.

Together with registry.py the only place that imports mlflow. Functions take the
tracking URI explicitly so tasks can pass plain strings around.
"""

from __future__ import annotations

import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

from visiongate.config import MlflowConfig

MAX_PARAM_LENGTH = 6000


def tracking_uri(root: Path, cfg: MlflowConfig) -> str:
    """Resolve a relative sqlite path against the project root (the UI and CLI share it)."""
    prefix = "sqlite:///"
    if cfg.tracking_uri.startswith(prefix) and not cfg.tracking_uri.startswith(prefix + "/"):
        db = (Path(root) / cfg.tracking_uri[len(prefix):]).resolve()
        db.parent.mkdir(parents=True, exist_ok=True)
        return f"{prefix}{db}"
    return cfg.tracking_uri


def ensure_experiment(uri: str, root: Path, cfg: MlflowConfig) -> str:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(cfg.experiment)
    if experiment is not None:
        return experiment.experiment_id
    artifacts = Path(cfg.artifact_root)
    artifacts = artifacts if artifacts.is_absolute() else Path(root).resolve() / artifacts
    artifacts.mkdir(parents=True, exist_ok=True)
    return client.create_experiment(cfg.experiment, artifact_location=artifacts.as_uri())


def start_run(uri: str, experiment_id: str, run_name: str, params: dict[str, str],
              tags: dict[str, str]) -> str:
    client = MlflowClient(uri)
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i:i + 100])
    return run.info.run_id


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v == v]  # drop NaN
    for i in range(0, len(items), 500):
        MlflowClient(uri).log_batch(run_id, metrics=items[i:i + 500])


def set_tags(uri: str, run_id: str, tags: dict[str, str]) -> None:
    client = MlflowClient(uri)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def log_text(uri: str, run_id: str, text: str, artifact_file: str) -> None:
    MlflowClient(uri).log_text(run_id, text, artifact_file)


def log_artifacts(uri: str, run_id: str, local_dir: Path, artifact_path: str) -> None:
    MlflowClient(uri).log_artifacts(run_id, str(local_dir), artifact_path)


def log_artifact(uri: str, run_id: str, local_file: Path, artifact_path: str) -> None:
    MlflowClient(uri).log_artifact(run_id, str(local_file), artifact_path)


def end_run(uri: str, run_id: str, failed: bool = False) -> None:
    status = RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED)
    MlflowClient(uri).set_terminated(run_id, status)


def run_summary(uri: str, run_id: str) -> dict:
    """Params, latest metrics and tags of a run (used by tests and the CLI)."""
    data = MlflowClient(uri).get_run(run_id).data
    return {"params": dict(data.params), "metrics": dict(data.metrics), "tags": dict(data.tags)}


def list_artifacts(uri: str, run_id: str, path: str | None = None) -> list[str]:
    return [f.path for f in MlflowClient(uri).list_artifacts(run_id, path)]
