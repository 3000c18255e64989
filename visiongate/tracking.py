"""MLflow tracking edge: runs, params, metrics, artifacts, and the model logged by a run.

Together with registry.py the only place that imports mlflow. Functions take the
tracking URI explicitly so tasks can pass plain strings around.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param, RunStatus
from mlflow.models import Model, ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service.utils import _use_tracking_uri
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

from visiongate import models, serving

from visiongate.config import MlflowConfig
from visiongate.paths import store_uri
from visiongate.stack import identity

MODEL_NAME = "model"  # the LoggedModel's name in its run
# min_score's default is None, "the model's own": MLflow fills a request's missing params
# with their defaults, so a number here would replace a classifier's min_score and its
# per-class thresholds (detections: None is serving.DEFAULT_MIN_SCORE)
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(DataType.string, "image")]),
    params=ParamSchema([ParamSpec("min_score", DataType.double, None)]))
REQUIREMENTS = ("visiongate", "mlflow", "torch", "torchvision", "ultralytics", "numpy", "pandas",
                "pillow", "pycocotools", "onnxruntime", "openvino")

MAX_PARAM_LENGTH = 6000
OWNER_TAG = "visiongate.owner"  # {"host", "pid", "start"} of the process writing the run
FAILURE_TAG = "visiongate.failure"  # why a run was marked FAILED after the fact
FLOW_RUN_TAG = "prefect.flow_run_id"  # the Prefect flow run the run belongs to


def tracking_uri(root: Path, cfg: MlflowConfig) -> str:
    """MLFLOW_TRACKING_URI if set, else params.yaml's (paths.store_uri: a relative sqlite
    path resolves against the project root, so the UI and CLI share it)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return store_uri(Path(root), cfg.tracking_uri)


def ensure_experiment(uri: str, root: Path, cfg: MlflowConfig) -> str:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(cfg.experiment)
    if experiment is not None:
        return experiment.experiment_id
    if uri.startswith(("http://", "https://")):  # the server proxies artifacts to its store
        return client.create_experiment(cfg.experiment)
    artifacts = Path(cfg.artifact_root)
    artifacts = artifacts if artifacts.is_absolute() else Path(root).resolve() / artifacts
    artifacts.mkdir(parents=True, exist_ok=True)
    return client.create_experiment(cfg.experiment, artifact_location=artifacts.as_uri())


def start_run(uri: str, experiment_id: str, run_name: str, params: dict[str, str],
              tags: dict[str, str]) -> str:
    """A RUNNING run tagged with the process that writes it (OWNER_TAG: close_orphans)."""
    client = MlflowClient(uri)
    run = client.create_run(experiment_id, run_name=run_name, tags={**tags, **_owner()})
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


def _owner() -> dict[str, str]:
    me = identity(os.getpid())
    return {OWNER_TAG: json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                   "start": me["start"] if me else None})}


def close_orphans(uri: str, experiment_id: str) -> list[tuple[str, str | None, str]]:
    """Runs of the experiment still RUNNING whose writing process on this host is gone
    (SIGKILL, out of memory, a reboot; a reused pid has another start time): each is marked
    FAILED, with the reason in FAILURE_TAG. Runs written on other hosts are left alone: their
    processes cannot be seen from here. Returns (run id, Prefect flow run id or None, reason)."""
    client, host, closed = MlflowClient(uri), socket.gethostname(), []
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'",
                                  max_results=1000):
        try:
            owner = json.loads(run.data.tags.get(OWNER_TAG, "null"))
            pid, start = int(owner["pid"]), owner["start"]
        except (ValueError, TypeError, KeyError):  # no or a malformed tag: not ours to judge
            continue
        if owner.get("host") != host or (identity(pid) or {}).get("start") == start:
            continue
        reason = (f"orphaned: its process {pid} on {host} ended without closing the run "
                  "(killed, out of memory or a restart); marked FAILED by a later run")
        client.set_tag(run.info.run_id, FAILURE_TAG, reason)
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
        closed.append((run.info.run_id, run.data.tags.get(FLOW_RUN_TAG), reason))
    return closed


def run_summary(uri: str, run_id: str) -> dict:
    """Params, latest metrics and tags of a run (used by tests and the CLI)."""
    data = MlflowClient(uri).get_run(run_id).data
    return {"params": dict(data.params), "metrics": dict(data.metrics), "tags": dict(data.tags)}


def list_artifacts(uri: str, run_id: str, path: str | None = None) -> list[str]:
    return [f.path for f in MlflowClient(uri).list_artifacts(run_id, path)]


@contextmanager
def process_tracking_uri(uri: str) -> Iterator[None]:
    """`uri` as MLflow's process-wide tracking URI (for calls that take none), then the
    previous one again, MLFLOW_TRACKING_URI included."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def scoring_app(model_dir: Path):
    """MLflow's scoring app (FastAPI, an ASGI app) for a local model folder the caller has
    already checked (visiongate.mlmodel.check_model_dir); visiongate.rest guards it."""
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(str(model_dir))
    return scoring_server.init(model)


def requirements() -> list[str]:
    """Pins of what the model imports (informational: serve with --env-manager local)."""
    out = []
    for lib in REQUIREMENTS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out.append(f"{lib}=={metadata.version(lib)}")
    return out


def log_model(uri: str, run_id: str, checkpoint: Path, example_image: Path) -> str:
    """Log a checkpoint as a pyfunc LoggedModel of the run (loader: visiongate.serving);
    returns `models:/<model_id>`.

    Only meta.json, the weights and the deployment artifacts that passed their parity check
    travel (models.export_checkpoint). The example image
    becomes the input example, which MLflow checks with a real prediction.
    """
    meta = models.CheckpointMeta.read(Path(checkpoint))
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    with tempfile.TemporaryDirectory(prefix="visiongate-") as tmp:
        exported = models.export_checkpoint(Path(checkpoint), Path(tmp) / "checkpoint")
        # Created here rather than by Model.log: it lands in the run's experiment without
        # making the run the process-wide active run.
        logged = client.create_logged_model(run.info.experiment_id, name=MODEL_NAME,
                                            source_run_id=run_id, model_type=meta.task,
                                            tags={"family": meta.family, "task": meta.task})
        with process_tracking_uri(uri):
            info = Model.log(
                None, mlflow.pyfunc, name=MODEL_NAME, run_id=run_id, model_id=logged.model_id,
                loader_module=serving.__name__, data_path=str(exported), signature=SIGNATURE,
                input_example=pd.DataFrame({"image": [serving.encode_image(example_image)]}),
                pip_requirements=requirements(),
                metadata={"family": meta.family, "task": meta.task,
                          "class_names": list(meta.class_names),
                          "format_version": meta.format_version,
                          "runtime": meta.runtime, "artifacts": sorted(meta.artifacts or {})})
    return info.model_uri


def latest_run_with_artifact(uri: str, experiment: str, model_name: str, artifact: str,
                             max_runs: int = 200) -> str | None:
    """Id of the newest run of `experiment` tagged model_name=<model_name> that logged the
    file `artifact` (e.g. suspects/suspects.csv); None when no run (of the newest max_runs)
    has it, or there is no such experiment."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    name = model_name.replace("\\", "\\\\").replace("'", "\\'")
    runs = client.search_runs([found.experiment_id], f"tags.model_name = '{name}'",
                              order_by=["attributes.start_time DESC"], max_results=max_runs)
    for run in runs:
        if _artifact_size(client, run.info.run_id, artifact) is not None:
            return run.info.run_id
    return None


def _artifact_size(client: MlflowClient, run_id: str, artifact: str) -> int | None:
    """Size in bytes (-1 when the store does not say) of a run's artifact file, or None."""
    parent = artifact.rsplit("/", 1)[0] if "/" in artifact else None
    for info in client.list_artifacts(run_id, parent):
        if info.path == artifact and not info.is_dir:
            return -1 if info.file_size is None else int(info.file_size)
    return None


def run_tags(uri: str, run_id: str) -> dict[str, str]:
    """A run's tags; NotFound when there is no run with that id."""
    from mlflow.exceptions import MlflowException

    from visiongate.errors import NotFound

    try:
        return dict(MlflowClient(uri).get_run(run_id).data.tags)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise NotFound(f"no MLflow run {run_id!r} in {uri}") from None
        raise


def download_artifact(uri: str, run_id: str, artifact: str, dst_dir: Path,
                      max_bytes: int) -> Path:
    """A run's artifact file downloaded into dst_dir; NotFound when the run has no such
    file, DataError when it is bigger than max_bytes (checked before downloading, where
    the store says, and after)."""
    from visiongate.errors import DataError, NotFound

    client = MlflowClient(uri)
    size = _artifact_size(client, run_id, artifact)
    if size is None:
        raise NotFound(f"run {run_id} has no artifact {artifact}")
    if size > max_bytes:
        raise DataError(f"artifact {artifact} of run {run_id} is {size} bytes, over the "
                        f"limit {max_bytes}")
    path = Path(client.download_artifacts(run_id, artifact, str(dst_dir)))
    if path.is_symlink() or not path.is_file() or path.stat().st_size > max_bytes:
        raise DataError(f"artifact {artifact} of run {run_id} is not a plain file of at most "
                        f"{max_bytes} bytes")
    return path
