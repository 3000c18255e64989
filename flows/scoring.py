"""Scoring a candidate and the champion for flows/retrain.py: both on the pinned test
split (on the comparison view when their class lists differ: visiongate.class_changes),
the candidate on corrupted copies, each evaluation writing its per-image records once
for the gate's paired bootstrap."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import get_run_logger

from tasks.evaluate import evaluate_model, evaluate_robustness, plot_robustness
from tasks.registry import alias_version, checkout
from visiongate import class_changes, registry
from visiongate.class_changes import Compared
from visiongate.datasets.coco import load_split
from visiongate.errors import DataError, ModelError
from visiongate.gate_stats import RecordFiles
from visiongate.models.meta import CheckpointMeta

if TYPE_CHECKING:
    from flows.retrain import Job


@dataclass(frozen=True)
class Scores:
    """The candidate's test metrics, the champion's on the same split, robustness, and
    where their per-image records are (the gate's paired bootstrap)."""

    metrics: dict[str, float]
    champion_version: str | None
    champion_metrics: dict[str, float] | None
    robustness: dict[str, dict[str, float]] | None
    records: RecordFiles | None = None
    champion_problem: str | None = None  # why the champion could not be re-scored
    champion_path: str | None = None     # its checkout, when it could be re-scored
    compared: Compared | None = None     # the class lists differ: the candidate on the view


@dataclass(frozen=True)
class ChampionScore:
    version: str | None = None
    metrics: dict[str, float] | None = None
    problem: str | None = None
    path: str | None = None
    view: str | None = None  # the candidate's comparison view, when the class lists differ
    note: str | None = None


def score(job: Job, checkpoint: str, run_id: str) -> Scores:
    """Candidate and champion on the pinned test split; the candidate on corrupted copies.
    Each evaluation also writes its per-image records, once, for the gate's bootstrap."""
    plots_dir, test = str(job.project.plots(run_id)), job.split("test")
    champion = score_champion(job, run_id)
    robustness, robust_cfg = None, job.cfg.gate.robustness
    records = RecordFiles.in_dir(job.project.records(run_id), champion.metrics is not None,
                                 list(robust_cfg.corruptions) if robust_cfg else [],
                                 champion.view is not None)
    metrics = evaluate_model(checkpoint, test, plots_dir, records.candidate)
    compared = None if champion.view is None else Compared(
        evaluate_model(checkpoint, champion.view, None, records.compared), champion.note)
    if robust_cfg:
        cache = job.project.robustness(Path(job.data_root).name, job.md5s["test"])
        robustness = evaluate_robustness(checkpoint, test, str(cache), robust_cfg.corruptions,
                                         records.corrupted_dir)
        plot_robustness(metrics, robustness, robust_cfg, plots_dir)
    return Scores(metrics, champion.version, champion.metrics, robustness, records,
                  champion.problem, champion.path, compared)


def score_champion(job: Job, run_id: str) -> ChampionScore:
    """The current champion re-scored on the pinned test split — or on the comparison view
    when its classes differ from the candidate's. Without a champion: all None. When it
    cannot be scored (an older checkpoint format, a refused file, renumbered classes, no
    image both can be scored on): its version and the problem; the gate then refuses to
    promote automatically."""
    version = alias_version(job.uri, job.name, registry.CHAMPION)
    if version is None:
        return ChampionScore()
    records = str(job.project.records(run_id) / "champion.npz")
    test = job.split("test")
    try:
        path = checkout(job.uri, job.name, version, str(job.project.champions))
        meta = CheckpointMeta.read(Path(path))
        theirs = meta.task, meta.config.get("view", "image")
        ours = job.cfg.task, job.view
        if theirs != ours:  # e.g. multi_label switched on: their scores differ in kind
            raise ModelError(f"the champion is a {theirs[0]} model on the {theirs[1]} view "
                             f"and the candidate a {ours[0]} one on the {ours[1]} view: their "
                             f"scores differ in kind")
        change = class_changes.compare(meta.class_names, load_split(Path(test)).class_names)
        if change.renumbered:
            raise ModelError(class_changes.renumbered_problem(change, version))
        if not change.changed:
            return ChampionScore(version, evaluate_model(path, test, None, records), None, path)
        mine, view, kept, total = class_changes.comparison_views(
            Path(test), meta.class_names, job.project.records(run_id) / "classes-view")
        note = (f"{change.describe(version)}; compared on the {kept} of {total} test images "
                "that hold only classes both know")
        get_run_logger().info("%s classes: %s", job.name, note)
        return ChampionScore(version, evaluate_model(path, str(view), None, records), None,
                             path, str(mine), note)
    except (ModelError, DataError) as err:
        get_run_logger().warning("%s champion v%s cannot be re-scored: %s", job.name, version, err)
        return ChampionScore(version, None, f"{err}; compare them by hand, then `visiongate "
                             f"promote {job.name} VERSION`")
