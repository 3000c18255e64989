"""The retrain chain: version data → train → evaluate → gate → register → promote.

    python -m flows.retrain [--root .]      or      visiongate retrain
"""

from __future__ import annotations

import sys
from pathlib import Path

from filelock import FileLock, Timeout

import flows  # noqa: F401  (Prefect environment defaults before prefect is imported)
from prefect import flow, get_run_logger

from tasks.data import describe_data, validate_data, verify_data, version_data
from tasks.evaluate import evaluate_model, evaluate_robustness, plot_robustness
from tasks.gate import gate
from tasks.registry import champion_checkpoint, log_model, promote, register, unchanged_version
from tasks.tracking import log_dataset, log_results, start_run
from tasks.train import augment_preview, train_model
from visiongate import registry, tracking
from visiongate.config import Params, check_deep, flatten, load_params, params_hash
from visiongate.datasets.prepare import has_masks
from visiongate.lineage import IDENTITY, lineage_tags


@flow(name="retrain")
def retrain(root: str = ".", params_file: str = "params.yaml",
            dataset: str | None = None, force: bool = False) -> list[dict]:
    """Retrain every enabled model task and promote each candidate the gate lets through.

    `dataset` (a folder under data/prepared with a DVC stage) overrides params.yaml's. A
    model whose data md5s, params section, code and libraries equal those of a registered
    version is not retrained ("nothing changed"), unless `force`.
    """
    project = Path(root).resolve()
    params = load_params(project / params_file, deep=False)  # deep checks only if it trains
    if dataset:
        params = params.model_copy(update={"dataset": dataset})
    lock = FileLock(lock_path(project, params.dataset))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RetrainBusy(f"another retrain of dataset {params.dataset!r} is running (lock "
                          f"{lock.lock_file}); this one changed nothing") from None
    try:
        return retrain_all(project, params, force)
    finally:
        lock.release()


def lock_path(project: Path, dataset: str) -> Path:
    """One lock per dataset: its retrains (and the data watcher's `dvc repro`) never overlap."""
    return project / ".cache" / "locks" / f"retrain-{dataset}.lock"


class RetrainBusy(RuntimeError):
    """Another retrain of the same dataset is running: retrains of one dataset never overlap."""


def retrain_all(project: Path, params: Params, force: bool = False) -> list[dict]:
    md5s = version_data(str(project), params.dataset)
    verify_data(str(project), params.dataset, md5s)
    uri = tracking.tracking_uri(project, params.mlflow)
    # What changed is decided first (md5s, params, code): a no-change run stops here.
    lineages = {task_name: lineage_tags(project, params.dataset, md5s, params_hash(cfg))
                for task_name, cfg in params.model_tasks().items()}
    outcomes = {task_name: None if force else unchanged(uri, f"{params.dataset}-{task_name}",
                                                         lineage)
                for task_name, lineage in lineages.items()}
    todo = [task_name for task_name, outcome in outcomes.items() if outcome is None]
    if todo:
        params = check_deep(params)
        data = project / "data" / "prepared" / params.dataset
        if "segment" in todo and not has_masks(data):
            raise ValueError(f"dataset {params.dataset!r} has boxes only, no masks: a "
                             "segmentation model cannot train on it (set segment.enabled: "
                             "false, or import masks)")
        quarantine = validate_data(str(project), params.dataset)
        stats_dir = project / ".cache" / "stats" / params.dataset
        counts = describe_data(str(project), params.dataset, str(stats_dir))
        experiment_id = tracking.ensure_experiment(uri, project, params.mlflow)
        dataset_info = {"quarantine": quarantine, "counts": counts, "stats_dir": str(stats_dir),
                        "quarantine_csv": str(data / "quarantine.csv")}
        for task_name in todo:
            outcomes[task_name] = retrain_one(project, params, task_name, md5s, lineages[task_name],
                                              dataset_info, uri, experiment_id)
    print(summary(list(outcomes.values()), uri))
    return list(outcomes.values())


def unchanged(uri: str, name: str, lineage: dict[str, str]) -> dict | None:
    """The outcome "nothing changed" when a registered version has this lineage, else None."""
    same = unchanged_version(uri, name, {k: lineage[k] for k in IDENTITY})
    if same is None:
        return None
    champion = f"v{same[1]}" if same[1] else "none"
    get_run_logger().info("%s: nothing changed since v%s (data, params, code), champion %s stays",
                          name, same[0], champion)
    return {"name": name, "version": same[0], "run_id": None, "metrics": {},
            "champion_metrics": None, "champion_version": same[1], "unchanged": True,
            "verdict": {"passed": True, "reasons": [f"nothing changed since v{same[0]}"]}}


def retrain_one(project: Path, params: Params, task_name: str, md5s: dict[str, str],
                lineage: dict[str, str], dataset_info: dict, uri: str, experiment_id: str) -> dict:
    cfg = params.model_tasks()[task_name]
    name = f"{params.dataset}-{task_name}"
    data_root = project / "data" / "prepared" / params.dataset
    quarantine = dataset_info["quarantine"]
    run_params = {**flatten(cfg, f"{task_name}."), **{f"data.md5.{s}": m for s, m in md5s.items()},
                  "data.images": quarantine["images"], "data.quarantined": quarantine["quarantined"]}
    run_id = start_run(uri, experiment_id, name, run_params, {**lineage, "model_name": name})
    log_dataset(uri, run_id, dataset_info["counts"], quarantine, dataset_info["stats_dir"],
                dataset_info["quarantine_csv"])
    work_dir = project / ".cache" / "train" / (  # resumable only with the same params, data, code
        f"{name}-{lineage['params_hash']}-{md5s['train'][:8]}-{lineage['code_hash'][:8]}")

    try:
        plots_dir = str(project / ".cache" / "plots" / run_id)
        augment_preview(cfg, str(data_root / "train"), f"{plots_dir}/augment_preview.png")
        checkpoint = train_model(cfg, str(data_root), str(work_dir), uri, run_id)
        metrics = evaluate_model(checkpoint, str(data_root / "test"), plots_dir)
        champion = champion_checkpoint(uri, name, str(project / ".cache" / "champions"))
        champion_metrics = evaluate_model(champion[1], str(data_root / "test")) if champion else None
        robustness = None
        if cfg.gate.robustness:
            robustness = evaluate_robustness(checkpoint, str(data_root / "test"), str(
                project / ".cache" / "robustness" / f"{params.dataset}-{md5s['test']}"),
                cfg.gate.robustness.corruptions)
            plot_robustness(metrics, robustness, cfg.gate.robustness, plots_dir)
        plots = sorted(f"plots/{p.name}" for p in Path(plots_dir).glob("*.png"))
        verdict, report = gate(name, metrics, champion_metrics, champion[0] if champion else None,
                               cfg.gate, lineage, robustness, quarantine, plots, run_id)
        log_results(uri, run_id, metrics, verdict, report, robustness, plots_dir)
        model_uri = log_model(uri, run_id, checkpoint, str(data_root / "test"))

        version = register(uri, name, model_uri, {**lineage, "run_id": run_id,
                                                  "gate.passed": str(verdict["passed"]).lower()})
        if verdict["passed"]:
            promote(uri, name, version, reason=f"gate passed in retrain run {run_id}")
    except BaseException:
        try:
            tracking.end_run(uri, run_id, failed=True)  # the run says FAILED; no champion moved
        except Exception as err:  # e.g. the tracking server is the failure: keep its error
            get_run_logger().warning("could not mark MLflow run %s FAILED: %s", run_id, err)
        raise
    tracking.end_run(uri, run_id)
    get_run_logger().info("%s v%s: %s", name, version, "promoted to champion" if verdict["passed"]
                          else f"refused; kept champion v{champion[0]} because "
                          f"{'; '.join(verdict['reasons'])}" if champion
                          else f"refused (no champion yet) because {'; '.join(verdict['reasons'])}")
    return {"name": name, "version": version, "run_id": run_id, "metrics": metrics,
            "champion_metrics": champion_metrics, "champion_version": champion[0] if champion else None,
            "verdict": verdict}


HEADLINE = ("map50", "map50_95", "map75", "precision", "recall", "miou", "dice", "pixel_acc")


def summary(outcomes: list[dict], uri: str) -> str:
    lines = ["", "=" * 72, "visiongate retrain — results", "=" * 72]
    for o in outcomes:
        aliases = registry.get(uri, o["name"], o["version"]).aliases
        headline = ", ".join(f"{k}={v:.3f}" for k, v in o["metrics"].items() if k in HEADLINE)
        if o.get("unchanged"):
            lines += [f"{o['name']}: nothing changed since v{o['version']} (data md5s, params, "
                      f"code) — not retrained; champion "
                      f"{'v' + o['champion_version'] if o['champion_version'] else 'none'} stays "
                      "(--force retrains anyway)"]
            continue
        decision = ("PROMOTED to champion" if o["verdict"]["passed"]
                    else f"REFUSED — kept champion v{o['champion_version']} because:"
                    if o["champion_version"]
                    else "REFUSED — no champion yet, because:")
        lines += [f"{o['name']} v{o['version']}  aliases: {', '.join(aliases) or '-'}",
                  f"  test metrics: {headline}", f"  gate: {decision}"]
        lines += [f"    - {r}" for r in o["verdict"]["reasons"]]
    lines += ["", "Open the MLflow UI on these results:",
              f"  browse {uri}" if uri.startswith("http") else
              f"  mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000\n"
              "  then browse http://127.0.0.1:5000", "=" * 72]
    return "\n".join(lines)


if __name__ == "__main__":
    from flows.cli import main

    raise SystemExit(main(["retrain", *sys.argv[1:]]))
