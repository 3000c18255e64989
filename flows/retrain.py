"""The retrain chain: version data → validate → train → score → decide → record (register)
→ promote and close the run in one transaction — or "nothing changed" when data, params and code equal a registered version's.

    python -m flows.retrain [--root .]      or      visiongate retrain
"""

from __future__ import annotations

import sys
from pathlib import Path
from dataclasses import dataclass, replace

import flows  # noqa: F401  (Prefect environment defaults before prefect is imported)
from prefect import flow, get_run_logger
from prefect.transactions import transaction

from tasks.data import describe_data, model_data, report_exclusions, validate_data, \
    verify_data, version_data, version_exclusions
from tasks.export import export_for_serving
from tasks.gate import gate
from tasks.registry import log_model, promote, register, \
    unchanged_version
from tasks.tracking import close_orphans, log_dataset, log_deployment, log_results, \
    start_run
from tasks.train import augment_preview, train_model
from visiongate import tracking
from visiongate.config import (ClassifyConfig, DetectConfig, Params, SegmentConfig, check_deep,
                               load_params)
from visiongate.datasets.exclude import KIND as EXCLUDED
from visiongate.datasets.prepare import check_task_data
from visiongate.datasets.safe_load import pixel_limit
from visiongate.errors import DataError, ModelError, RetrainBusy  # noqa: F401 (re-exported)
from visiongate.export import Deployment
from visiongate.gates import GateResult
from visiongate.models.meta import CheckpointMeta
from visiongate.lineage import IDENTITY, flatten, identity, lineage_tags, params_hash
from flows.insight import show_insight
from flows.scoring import Scores, score
from visiongate.outcomes import DatasetInfo, Insight, Outcome, summary
from visiongate.paths import Project, registry_name


@flow(name="retrain")
def retrain(root: str = ".", params_file: str = "params.yaml",
            dataset: str | None = None, force: bool = False) -> list[Outcome]:
    """Retrain every enabled model task and promote each candidate the gate lets through.

    `dataset` (a folder under data/prepared with a DVC stage) overrides params.yaml's. A
    model whose data md5s, params section, code and libraries equal those of a registered
    version is not retrained ("nothing changed"), unless `force`.
    """
    project = Project.at(root)
    params = load_params(project.root / params_file, deep=False,  # deep checks only if it trains
                         root=project.root)
    if dataset:
        params = params.model_copy(update={"dataset": dataset})
    with project.holding_retrain_lock(params.dataset):
        return retrain_all(project, params, force)


def retrain_all(project: Project, params: Params, force: bool = False) -> list[Outcome]:
    md5s = version_data(str(project.root), params.dataset)
    verify_data(str(project.root), params.dataset, md5s)
    excluded = version_exclusions(str(project.root), params.dataset)  # None: no exclusions
    uri = tracking.tracking_uri(project.root, params.mlflow)
    # What changed is decided first (md5s, exclusions, params, code): a no-change run stops here.
    lineages = {task: lineage_tags(project.root, params.dataset, md5s, params_hash(cfg),
                                   cfg.weights_file(), excluded)
                for task, cfg in params.model_tasks().items()}
    outcomes = {task: None if force else unchanged(uri, registry_name(params.dataset, task),
                                                   identity(lineage))
                for task, lineage in lineages.items()}
    todo = [task for task, outcome in outcomes.items() if outcome is None]
    if todo:
        params = check_deep(params)
        with pixel_limit(params.validation.max_pixels):  # images above it: refused, not decoded
            data = validate(project, params, todo)
            experiment_id = tracking.ensure_experiment(uri, project.root, params.mlflow)
            close_orphans(uri, experiment_id)  # runs a killed retrain left RUNNING: FAILED
            for task in todo:
                root = model_data(str(project.root), params.dataset, view_of(params, task))
                job = Job(project, params, task, md5s, lineages[task], data, uri, experiment_id,
                          root)
                outcomes[task] = retrain_one(job)
    print(summary(list(outcomes.values()), uri))
    return list(outcomes.values())


def unchanged(uri: str, name: str, lineage: dict[str, str]) -> Outcome | None:
    """The outcome "nothing changed" when a registered version has this lineage, else None."""
    same = unchanged_version(uri, name, {k: lineage[k] for k in IDENTITY})
    if same is None:
        return None
    outcome = Outcome(name, "unchanged", version=same[0], champion_version=same[1])
    get_run_logger().info(outcome.describe())
    return outcome


def validate(project: Project, params: Params, tasks: list[str]) -> DatasetInfo:
    """The prepared dataset checked (quarantine summary) and described (counts, plots)."""
    data = project.prepared(params.dataset)
    check_task_data(params.dataset, data, tasks)
    quarantine = validate_data(str(project.root), params.dataset)
    report = data / "quarantine.csv"
    excluded = report_exclusions(str(project.root), params.dataset)
    if excluded:  # the user's decision, not bad data: a kind of its own in the report, and
        # never counted in `quarantined` / `share`, which the gate's max_quarantine_share judges
        quarantine = replace(quarantine, by_kind={**quarantine.by_kind, EXCLUDED: excluded})
        report = project.quarantine_report(params.dataset)
    stats_dir = project.stats(params.dataset)
    counts = describe_data(str(project.root), params.dataset, str(stats_dir))
    return DatasetInfo(quarantine, counts, str(stats_dir), str(report))


def view_of(params: Params, task: str) -> str:
    """The data view a model task reads (`classify.view`; the others: the images)."""
    return getattr(params.model_tasks()[task], "view", "image")


@dataclass(frozen=True)
class Job:
    """Everything one model task's retrain needs (small values only)."""

    project: Project
    params: Params
    task: str
    md5s: dict[str, str]
    lineage: dict[str, str]
    data: DatasetInfo
    uri: str
    experiment_id: str
    data_root: str  # the prepared dataset, or the view of it this task reads (model_data)

    @property
    def name(self) -> str:
        return registry_name(self.params.dataset, self.task)

    @property
    def cfg(self) -> DetectConfig | SegmentConfig | ClassifyConfig:
        return self.params.model_tasks()[self.task]

    @property
    def view(self) -> str:
        return view_of(self.params, self.task)

    def split(self, split: str) -> str:
        return str(Path(self.data_root) / split)


def retrain_one(job: Job) -> Outcome:
    run_id = open_run(job)
    try:
        checkpoint = train_candidate(job, run_id)
        scores = score(job, checkpoint, run_id)
        deployment = export_for_serving(checkpoint, job.split("test"), scores.metrics,
                                        job.params.serve)
        log_deployment(job.uri, run_id, deployment)
        insight = show_insight(job, checkpoint, scores.champion_path, run_id)
        verdict, report = decide(job, scores, run_id, insight, deployment)
        version = record(job, run_id, checkpoint, verdict)
        # The champion moves with a finished run or not at all: if closing the run fails,
        # the transaction's rollback puts the aliases back (tasks/registry.py).
        with transaction():
            if verdict.passed:
                promote(job.uri, job.name, version, reason=f"gate passed in retrain run {run_id}")
            tracking.end_run(job.uri, run_id)
    except BaseException:
        try:
            tracking.end_run(job.uri, run_id, failed=True)  # the run says FAILED; no champion moved
        except Exception as err:  # e.g. the tracking server is the failure: keep its error
            get_run_logger().warning("could not mark MLflow run %s FAILED: %s", run_id, err)
        raise
    outcome = Outcome(job.name, "promoted" if verdict.passed else "refused", version,
                      scores.champion_version, scores.metrics, scores.champion_metrics,
                      verdict, run_id)
    get_run_logger().info(outcome.describe())
    return outcome


def open_run(job: Job) -> str:
    """The MLflow run this candidate's retrain writes to, with its params and dataset."""
    quarantine = job.data.quarantine
    run_params = {**flatten(job.cfg, f"{job.task}."),
                  **{f"data.md5.{s}": m for s, m in job.md5s.items()},
                  "data.images": quarantine.images, "data.quarantined": quarantine.quarantined}
    run_id = start_run(job.uri, job.experiment_id, job.name, run_params,
                       {**job.lineage, "model_name": job.name})
    log_dataset(job.uri, run_id, job.data.counts, quarantine, job.data.stats_dir,
                job.data.quarantine_csv)
    return run_id


def train_candidate(job: Job, run_id: str) -> str:
    """Train (resumable only with the same params, data and code): the checkpoint dir."""
    lineage = job.lineage
    # an exclusion list changes what is trained on, not the split md5s: never resume across it
    excluded = f"-x{lineage['data.md5.exclude'][:8]}" if "data.md5.exclude" in lineage else ""
    # nor across another weights file under the same name (its sha256 is in the lineage)
    weights = lineage["weights.sha256"]
    excluded += f"-w{weights[:8]}" if weights not in ("none", "missing") else ""
    work_dir = job.project.train_dir(f"{job.name}-{lineage['params_hash']}-"
                                     f"{job.md5s['train'][:8]}-{lineage['code_hash'][:8]}"
                                     f"{excluded}")
    plots_dir = job.project.plots(run_id)
    augment_preview(job.cfg, job.split("train"), str(plots_dir / "augment_preview.png"))
    return train_model(job.cfg, job.data_root, str(work_dir), job.uri, run_id)


def decide(job: Job, scores: Scores, run_id: str, insight: Insight | None = None,
           deployment: Deployment | None = None) -> tuple[GateResult, str]:
    """The gate's verdict and its report, logged to the run with the test metrics."""
    plots_dir = job.project.plots(run_id)
    plots = sorted(f"plots/{p.name}" for p in plots_dir.glob("*.png"))
    verdict, report = gate(job.name, scores.metrics, scores.champion_metrics,
                           scores.champion_version, job.cfg.gate, job.lineage, scores.robustness,
                           job.data.quarantine, plots, run_id, scores.records,
                           scores.champion_problem, insight, deployment, scores.compared)
    log_results(job.uri, run_id, scores.metrics, verdict, report, scores.robustness,
                str(plots_dir))
    return verdict, report


def record(job: Job, run_id: str, checkpoint: str, verdict: GateResult) -> str:
    """Log the candidate as the run's model and register it (alias challenger)."""
    model_uri = log_model(job.uri, run_id, checkpoint, job.split("test"))
    return register(job.uri, job.name, model_uri, {
        **job.lineage, "run_id": run_id, "gate.passed": str(verdict.passed).lower(),
        "serve.runtime": CheckpointMeta.read(Path(checkpoint)).runtime})


if __name__ == "__main__":
    from flows.cli import main

    raise SystemExit(main(["retrain", *sys.argv[1:]]))
