"""Deployments: scheduled retraining, weekly champion checks, prediction on demand, and a
data watcher. `visiongate serve` (after `make up`) registers and runs them in its own
process; `visiongate deploy --pool NAME` registers them with a work pool instead, for
`prefect worker start --pool NAME` to run:

    retrain/scheduled            params.yaml schedule.retrain_cron (nightly); one at a time
    evaluate-champions/weekly    schedule.evaluate_cron: each champion re-scored on the pinned
                                 test split; the run fails if a champion is below its floors
    predict/on-demand            no schedule: run it from the UI or `prefect deployment run`
    watch-data/poll              every schedule.data_poll_minutes: when the dataset's DVC md5s
                                 have no registered version yet, it starts retrain/scheduled
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import flows  # noqa: F401  (Prefect environment defaults before prefect is imported)
from prefect import flow, get_client, get_run_logger, serve
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments import run_deployment
from prefect.types.entrypoint import EntrypointType
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.schedules import Cron, Interval
from prefect.workers.process import ProcessWorker

from flows.predict import predict
from flows.retrain import retrain
from tasks.data import model_data, verify_data, version_data
from tasks.evaluate import evaluate_model
from tasks.gate import floor_check, publish_metrics_table
from tasks.registry import champion_checkpoint, versions_on_data
from tasks.tracking import close_orphans, log_evaluation
from visiongate import tracking
from visiongate.config import load_params
from visiongate.errors import RetrainBusy
from visiongate.models.meta import CheckpointMeta
from visiongate.outcomes import ChampionCheck
from visiongate.paths import Project, registry_name

RETRAIN = "retrain/scheduled"


@flow(name="evaluate-champions")
def evaluate_champions(root: str = ".", params_file: str = "params.yaml") -> list[ChampionCheck]:
    """Re-score every champion on the dataset's current pinned test split; log an MLflow run
    and a Prefect table per model. Fails when a champion is below its floors."""
    project = Project.at(root)
    params = load_params(project.root / params_file, deep=False)
    md5s = version_data(str(project.root), params.dataset)
    verify_data(str(project.root), params.dataset, md5s)
    uri = tracking.tracking_uri(project.root, params.mlflow)
    experiment_id = tracking.ensure_experiment(uri, project.root, params.mlflow)
    close_orphans(uri, experiment_id)  # runs a killed retrain left RUNNING: FAILED
    logger, results, below = get_run_logger(), [], []
    for task_name, cfg in params.model_tasks().items():
        name = registry_name(params.dataset, task_name)
        champion = champion_checkpoint(uri, name, str(project.champions))
        if champion is None:
            logger.info("%s: no champion yet, nothing to evaluate", name)
            continue
        view = CheckpointMeta.read(Path(champion[1])).config.get("view", "image")
        data = model_data(str(project.root), params.dataset, view)  # the view it trained on
        metrics = evaluate_model(champion[1], str(Path(data) / "test"))
        verdict = floor_check(metrics, cfg.gate)
        publish_metrics_table(f"champion-{name}", metrics, None, f"{name} v{champion[0]} on test "
                              f"split {md5s['test'][:8]}")
        log_evaluation(uri, experiment_id, name, champion[0], md5s, metrics, verdict)
        results.append(ChampionCheck(name, champion[0], metrics, verdict))
        logger.info("%s v%s: %s", name, champion[0], "; ".join(verdict.reasons))
        if not verdict.passed:
            below.append(f"{name} v{champion[0]}: {'; '.join(verdict.reasons)}")
    if below:
        raise RuntimeError("champion below its floors on the current test split: " + " | ".join(below))
    return results


@flow(name="watch-data")
def watch_data(root: str = ".", params_file: str = "params.yaml") -> str | None:
    """Start a retrain when the dataset's DVC md5s have no registered version of some
    enabled model. Returns the started flow run's id, or None."""
    project = Project.at(root)
    params = load_params(project.root / params_file, deep=False)
    logger = get_run_logger()
    try:
        with project.holding_retrain_lock(params.dataset):
            md5s = version_data(str(project.root), params.dataset)  # `dvc repro`: new raw data
    except RetrainBusy:
        logger.info("a retrain of %r is running; nothing to check", params.dataset)
        return None
    uri = tracking.tracking_uri(project.root, params.mlflow)
    stale = [registry_name(params.dataset, t) for t in params.model_tasks()
             if not versions_on_data(uri, registry_name(params.dataset, t), md5s)]
    if not stale:
        logger.info("data unchanged (train %s): every model has a version on it", md5s["train"][:8])
        return None
    run = run_deployment(RETRAIN, parameters={"root": str(project.root), "params_file": params_file},
                         timeout=0, as_subflow=False)
    logger.info("no version of %s on data %s: started retrain run %s", ", ".join(stale),
                md5s["train"][:8], run.id)
    return str(run.id)


def deployments(root: Path, params_file: str = "params.yaml",
                entrypoint: EntrypointType = EntrypointType.FILE_PATH) -> list:
    """The four deployments, for `serve`, or with entrypoint MODULE_PATH for a work pool
    (its workers import them from the installed package: deploy_to_pool)."""
    project = Path(root).resolve()
    schedule = load_params(project / params_file, deep=False).schedule
    args = {"root": str(project), "params_file": params_file}
    tz, common = schedule.timezone, {"entrypoint_type": entrypoint}
    out = [
        retrain.to_deployment("scheduled", schedules=[Cron(schedule.retrain_cron, timezone=tz)],
                              parameters=args, concurrency_limit=ConcurrencyLimitConfig(
                                  limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
                              description="retrain, gate and promote; nothing when nothing "
                              "changed", **common),
        evaluate_champions.to_deployment("weekly", parameters=args, schedules=[
            Cron(schedule.evaluate_cron, timezone=tz)], **common),
        predict.to_deployment("on-demand", parameters={"root": str(project),
                                                       "params_file": params_file}, **common),
    ]
    if schedule.data_poll_minutes > 0:  # first poll one interval after `serve` starts
        every = timedelta(minutes=schedule.data_poll_minutes)
        out.append(watch_data.to_deployment("poll", parameters=args, schedules=[
            Interval(every, anchor_date=datetime.now(timezone.utc) + every)], **common))
    return out


def deploy_to_pool(root: Path, pool: str, params_file: str = "params.yaml") -> list[str]:
    """Register the deployments with work pool `pool` (created as a `process` pool with
    Prefect's default job template when missing) and return their names. A worker runs them:
    `prefect worker start --pool POOL` where visiongate is installed and the project folder
    (params.yaml, dvc.yaml, its DVC cache or remote) is at the same path."""
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(
                name=pool, type="process",
                base_job_template=ProcessWorker.get_default_base_job_template()))
        except ObjectAlreadyExists:
            pass
    names, planned = [], deployments(root, params_file, EntrypointType.MODULE_PATH)
    replace_rebound(planned, pool)
    for deployment in planned:
        deployment.apply(work_pool_name=pool)
        names.append(f"{deployment.flow_name}/{deployment.name}")
    return names


def serve_deployments(root: Path, params_file: str = "params.yaml") -> None:
    """Register the deployments and run their flow runs until interrupted (Ctrl-C)."""
    planned = deployments(root, params_file)
    replace_rebound(planned, None)
    serve(*planned)


def replace_rebound(planned: list, pool: str | None) -> None:
    """Delete the registered deployments of the same names bound otherwise than `pool`
    (None: run by `visiongate serve`), and say so. Prefect updates a deployment in place and
    keeps its old binding's storage fields: a served deployment left over from `deploy
    --pool` crashed every run ("Downloading flow code from storage at None"). Past flow
    runs stay on the server; the old deployment's scheduled ones go with it."""
    with get_client(sync_client=True) as client:
        for deployment in planned:
            name = f"{deployment.flow_name}/{deployment.name}"
            try:
                old = client.read_deployment_by_name(name)
            except ObjectNotFound:
                continue
            if old.work_pool_name != pool:
                client.delete_deployment(old.id)
                was = f"work pool {old.work_pool_name!r}" if old.work_pool_name else "serve"
                print(f"replaced deployment {name} (was registered for {was})", flush=True)
