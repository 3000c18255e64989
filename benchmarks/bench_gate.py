"""Does the gate refuse what it should, and only that? False refusals and power, measured.

    .venv/bin/python benchmarks/bench_gate.py [--candidates 5] [--tasks detect segment classify] [--write]

On the demo dataset (params.yaml `synth`) with the demo settings (params.yaml `detect` /
`segment`), per task: a champion (seed 0) and `--candidates` equivalent candidates (same
settings, seeds 1..K) and `--candidates` truly worse ones (a quarter of the epochs, seeds
1..K). Each candidate is scored on the pinned test split with per-image records, its
corrupted copies too, and put through the full gate (floors, non-regression, robustness)
against the champion, exactly as the retrain flow does. False refusals = equivalent
candidates refused (goal 0); power = worse candidates refused (goal all). `--write`
updates its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.report import machine, update_section  # noqa: E402
from visiongate import models  # noqa: E402
from visiongate.config import load_params  # noqa: E402
from visiongate.datasets.synth import generate  # noqa: E402
from visiongate.evaluate import evaluate, evaluate_corrupted  # noqa: E402
from visiongate.gate_stats import RecordFiles, load_gate_samples  # noqa: E402
from visiongate.gates import evaluate_gate  # noqa: E402
from visiongate.datasets.coco import load_split  # noqa: E402
from visiongate.outcomes import QuarantineSummary  # noqa: E402
from visiongate.paths import SPLITS  # noqa: E402

SECTION = "## Gate: false refusals and power"
REPO = Path(__file__).resolve().parents[1]


def score(cfg, checkpoint: Path, data: Path, folder: Path, champion: bool) -> tuple[dict, dict]:
    """(clean metrics, corrupted metrics) with records under folder."""
    corruptions = list(cfg.gate.robustness.corruptions) if cfg.gate.robustness else []
    files = RecordFiles.in_dir(folder, False, corruptions)
    metrics = evaluate(checkpoint, data / "test", records_path=Path(files.candidate))
    robust = {} if champion or not corruptions else evaluate_corrupted(
        checkpoint, data / "test", folder / "copies", cfg.gate.robustness.corruptions,
        records_dir=Path(files.corrupted_dir))
    return metrics, robust


def judge(cfg, candidate: tuple, champion_metrics: dict, folder: Path, champion_folder: Path,
          images: int):
    corruptions = list(cfg.gate.robustness.corruptions) if cfg.gate.robustness else []
    files = RecordFiles(str(folder / "candidate.npz"), str(champion_folder / "candidate.npz"),
                        {c: str(folder / "corrupted" / f"{c}.npz") for c in corruptions})
    samples = load_gate_samples(files, cfg.gate, candidate[0])
    clean = QuarantineSummary(images, 0, 0.0, {})  # generated data: nothing quarantined
    return evaluate_gate(candidate[0], champion_metrics, cfg.gate, candidate[1] or None,
                         clean, samples)


def run_task(task: str, data: Path, work: Path, k: int, epochs: int | None) -> list[dict]:
    base = getattr(load_params(REPO / "params.yaml", deep=True), task)
    base = base.model_copy(update={"epochs": epochs}) if epochs else base
    key = {"detect": "map50", "segment": "miou", "classify": "accuracy",
           "multilabel": "map"}.get(base.task, "mask_map50")
    rows, champion = [], None
    n_images = sum(len(load_split(data / split).images) for split in SPLITS)
    plan = [("champion", 0, base.epochs)] + [("equivalent", s, base.epochs) for s in range(1, k + 1)] \
        + [("worse", s, max(1, base.epochs // 4)) for s in range(1, k + 1)]
    for kind, seed, epochs in plan:
        cfg = base.model_copy(update={"seed": seed, "epochs": epochs})
        t0 = time.perf_counter()
        checkpoint = models.train(cfg, data, work / f"{task}-{kind}-{seed}")
        folder = work / "records" / f"{task}-{kind}-{seed}"
        scored = score(cfg, checkpoint, data, folder, kind == "champion")
        if kind == "champion":
            champion = (scored[0], folder)
            continue
        result = judge(cfg, scored, champion[0], folder, champion[1], n_images)
        failed = [c for c in result.checks if not c.passed]
        rows.append({"task": task, "kind": kind, "seed": seed, "epochs": epochs,
                     "metric": key, "value": scored[0][key], "champion": champion[0][key],
                     "refused": not result.passed,
                     "why": "; ".join(c.name for c in failed) or "-",
                     "seconds": time.perf_counter() - t0})
        print(rows[-1], flush=True)
    return rows


def render(rows: list[dict], k: int) -> str:
    lines = [SECTION, "", f"`benchmarks/bench_gate.py --candidates {k}` on {machine()}: demo "
             "data and settings (params.yaml), champion = seed 0, equivalent = same settings "
             "with seeds 1..K, worse = a quarter of the epochs. Full gate (floors, "
             "non-regression, robustness) with its paired bootstrap, as the retrain flow runs it.",
             "", "| task | candidates | refused | goal |", "|---|---|---:|---|"]
    for task in dict.fromkeys(r["task"] for r in rows):
        for kind, goal in (("equivalent", "0 (false refusals)"), ("worse", "all (power)")):
            sel = [r for r in rows if r["task"] == task and r["kind"] == kind]
            lines.append(f"| {task} | {kind} ({len(sel)}) | {sum(r['refused'] for r in sel)} | "
                         f"{goal} |")
    lines += ["", "| task | kind | seed | epochs | metric | candidate | champion | refused by |",
              "|---|---|---:|---:|---|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['kind']} | {r['seed']} | {r['epochs']} | {r['metric']} "
                     f"| {r['value']:.3f} | {r['champion']:.3f} | {r['why'] if r['refused'] else '-'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--tasks", nargs="*", default=["detect", "segment"])
    parser.add_argument("--epochs", type=int, help="smoke test only: override the demo's epochs")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    params = load_params(REPO / "params.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate(params.synth, data)
        rows = [r for task in args.tasks for r in run_task(task, data, Path(tmp), args.candidates,
                                                          args.epochs)]
    text = render(rows, args.candidates)
    print(text)
    if args.write:
        update_section(text)


if __name__ == "__main__":
    main()
