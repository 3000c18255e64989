"""The retrain chain: version data → train → evaluate → gate → register → promote.

    python -m flows.retrain [--root .]      or      visiongate retrain
"""

from __future__ import annotations

import sys
from pathlib import Path

import flows  # noqa: F401  (Prefect environment defaults before prefect is imported)
from prefect import flow, get_run_logger

from tasks.data import version_data
from tasks.evaluate import evaluate_model, evaluate_robustness
from tasks.gate import gate
from tasks.registry import champion_checkpoint, log_model, promote, register
from tasks.tracking import log_results, start_run
from tasks.train import train_model
from visiongate import registry, tracking
from visiongate.config import Params, flatten, load_params, params_hash
from visiongate.lineage import lineage_tags


@flow(name="retrain")
def retrain(root: str = ".", params_file: str = "params.yaml") -> list[dict]:
    """Retrain every enabled model task and promote each candidate the gate lets through."""
    project = Path(root).resolve()
    params = load_params(project / params_file)
    md5s = version_data(str(project), params.dataset)
    uri = tracking.tracking_uri(project, params.mlflow)
    experiment_id = tracking.ensure_experiment(uri, project, params.mlflow)
    outcomes = [retrain_one(project, params, task_name, md5s, uri, experiment_id)
                for task_name in params.model_tasks()]
    print(summary(outcomes, uri))
    return outcomes


def retrain_one(project: Path, params: Params, task_name: str, md5s: dict[str, str], uri: str,
                experiment_id: str) -> dict:
    cfg = params.model_tasks()[task_name]
    name = f"{params.dataset}-{task_name}"
    data_root = project / "data" / "prepared" / params.dataset
    lineage = lineage_tags(project, params.dataset, md5s, params_hash(cfg))
    run_params = {**flatten(cfg, f"{task_name}."), **{f"data.md5.{s}": m for s, m in md5s.items()}}
    run_id = start_run(uri, experiment_id, name, run_params, {**lineage, "model_name": name})
    work_dir = project / ".cache" / "train" / f"{name}-{lineage['params_hash']}-{md5s['train'][:8]}"

    try:
        checkpoint = train_model(cfg, str(data_root), str(work_dir), uri, run_id)
        metrics = evaluate_model(checkpoint, str(data_root / "test"))
        champion = champion_checkpoint(uri, name, str(project / ".cache" / "champions"))
        champion_metrics = evaluate_model(champion[1], str(data_root / "test")) if champion else None
        robustness = (evaluate_robustness(checkpoint, str(data_root / "test"), str(
            project / ".cache" / "robustness" / f"{params.dataset}-{md5s['test']}"),
            cfg.gate.robustness.corruptions) if cfg.gate.robustness else None)
        verdict, report = gate(name, metrics, champion_metrics, champion[0] if champion else None,
                               cfg.gate, lineage, robustness)
        log_results(uri, run_id, metrics, verdict, report, robustness)
        log_model(uri, run_id, checkpoint)

        version = register(uri, name, run_id, {**lineage, "run_id": run_id,
                                               "gate.passed": str(verdict["passed"]).lower()})
        if verdict["passed"]:
            promote(uri, name, version, reason=f"gate passed in retrain run {run_id}")
    except BaseException:
        tracking.end_run(uri, run_id, failed=True)  # the run says FAILED; no champion moved
        raise
    tracking.end_run(uri, run_id)
    get_run_logger().info("%s v%s: %s", name, version, "promoted" if verdict["passed"] else "kept champion")
    return {"name": name, "version": version, "run_id": run_id, "metrics": metrics,
            "champion_metrics": champion_metrics, "champion_version": champion[0] if champion else None,
            "verdict": verdict}


HEADLINE = ("map50", "map50_95", "map75", "map_small", "map_medium", "miou", "dice", "pixel_acc")


def summary(outcomes: list[dict], uri: str) -> str:
    lines = ["", "=" * 72, "visiongate retrain — results", "=" * 72]
    for o in outcomes:
        aliases = registry.get(uri, o["name"], o["version"]).aliases
        headline = ", ".join(f"{k}={v:.3f}" for k, v in o["metrics"].items() if k in HEADLINE)
        decision = ("PROMOTED to champion" if o["verdict"]["passed"]
                    else f"REFUSED — kept champion v{o['champion_version']}" if o["champion_version"]
                    else "REFUSED — no champion")
        lines += [f"{o['name']} v{o['version']}  aliases: {', '.join(aliases) or '-'}",
                  f"  test metrics: {headline}", f"  gate: {decision}"]
        lines += [f"    - {r}" for r in o["verdict"]["reasons"]]
    lines += ["", "Open the MLflow UI on these results:",
              f"  mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000",
              "  then browse http://127.0.0.1:5000", "=" * 72]
    return "\n".join(lines)


if __name__ == "__main__":
    from flows.cli import main

    raise SystemExit(main(["retrain", *sys.argv[1:]]))
