"""The "Retrain flow" section of BENCHMARKS.md, rendered from bench_retrain.py's figures."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from benchmarks.report import machine

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Retrain flow"
GOAL_RERUN_S = {"no_stack": 5.0, "stack": 3.0}
PHASE_NAMES = {"startup": "start-up (imports, Prefect server)", "data": "data "
               "generation or re-hash + versioning + checks", "evaluation": "evaluation + robustness + gate", "tracking":
               "MLflow logging + registration", "other": "other tasks", "finish": "shutdown"}


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def _split_text(split: dict[str, float]) -> str:
    return ", ".join(f"{PHASE_NAMES[k]} {v:.1f} s" for k, v in split.items() if k != "training")


def _meets(seconds: float, setup: str) -> str:
    return "meets" if seconds <= GOAL_RERUN_S[setup] else "misses"


def intro(f: dict, args: argparse.Namespace) -> list[str]:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    det, seg, synth = params["detect"], params["segment"], params["synth"]["splits"]
    epochs = f"--epochs {args.epochs} " if args.epochs else ""
    return [
        SECTION, "",
        "The whole `visiongate retrain`, as a user runs it: a subprocess in a fresh temporary "
        "project (the repo's dvc.yaml and params.yaml, `dvc init --no-scm`, its own MLflow sqlite "
        "store; one Prefect home for the benchmark, its database created beforehand in "
        f"{f['migrate_s']:.1f} s). Demo settings: synthetic shapes {synth['train']}/{synth['val']}"
        f"/{synth['test']} images; detect {det['model']}, {det['imgsz']} px, batch "
        f"{det['batch']}, epochs {args.epochs or det['epochs']}; segment {seg['family']}, "
        f"{seg['imgsz']} px, batch {seg['batch']}, epochs {args.epochs or seg['epochs']}. Raw "
        "ultralytics is its own process on a fresh export of the same data with the arguments "
        "visiongate passes (AdamW, lr, nbs = batch, seed, deterministic, workers 0, "
        "`ultralytics_args`, the params' albumentations pipeline as `augmentations`, all cores, "
        "ultralytics' MLflow callback off). The flow does more than train: evaluation, "
        "robustness, the gate, the serving artifacts' export and parity check, heatmaps, the "
        "test-split map and the label-quality scores (params.yaml defaults). (1) starts with the "
        "data already generated and pinned (`dvc repro` in the project beforehand, not timed); "
        "(3) generates it, as `make demo` on a fresh clone does. (1) and (3) are single "
        f"runs (minutes each); (2) is the median of {args.repeats}. Memory: peak of the summed "
        "RSS of the process tree (Prefect server and DVC stage included; shared pages count in "
        "each process), sampled every 0.2 s; each process's own peak and the tree's summed PSS "
        "(every 1 s) attribute it.", "",
        f"Machine: {machine()}.", "",
        f"Command: `.venv/bin/python benchmarks/bench_retrain.py {epochs}--repeats "
        f"{args.repeats} --write`", ""]


def rows(f: dict) -> list[str]:
    flow, raw, demo, rerun = f["flow"], f["raw"], f["demo"], f["rerun"]
    training = f["split"].get("training", float("nan"))
    return [
        "| figure | command measured | visiongate | reference (same run) | ratio |",
        "|---|---|---|---|---|",
        f"| (1) retrain flow, detect only, data pinned | `visiongate retrain` (segment, classify "
        f"disabled) | "
        f"{flow.wall:.1f} s | raw `YOLO(...).train(...)` process {raw.wall:.1f} s | "
        f"**{flow.wall / raw.wall:.2f}×** |",
        f"| (1) … its training | task `train_model` | {training:.1f} s | raw export + `train()` "
        f"{f['raw_train_s']:.1f} s | {training / f['raw_train_s']:.2f}× |",
        f"| (1) … everything else | the other tasks, start-up, shutdown | "
        f"{flow.wall - training:.1f} s | — | {1 - training / flow.wall:.0%} of the flow |",
        f"| (2a) no-change rerun, stack up | `visiongate up`, then `visiongate retrain` | "
        f"**{rerun['stack']:.1f} s** | goal ≤ {GOAL_RERUN_S['stack']:.0f} s | "
        f"{_meets(rerun['stack'], 'stack')} it |",
        f"| (2b) no-change rerun, no stack | `visiongate retrain` | "
        f"**{rerun['no_stack']:.1f} s** | goal ≤ {GOAL_RERUN_S['no_stack']:.0f} s | "
        f"{_meets(rerun['no_stack'], 'no_stack')} it |",
        f"| (3) `make demo` peak RSS | `visiongate retrain` (detect + segment + classify) | "
        f"**{gib(demo.peak_rss)}** | raw ultralytics process {gib(raw.peak_rss)}; machine "
        f"{gib(f['mem'])} | {demo.peak_rss / raw.peak_rss:.1f}× raw |",
        f"| (3) `make demo` wall | the same run | {demo.wall:.1f} s | (1) detect only "
        f"{flow.wall:.1f} s | {demo.wall / flow.wall:.2f}× |", ""]


def readings(f: dict) -> list[str]:
    flow, raw, demo, rerun = f["flow"], f["raw"], f["demo"], f["rerun"]
    training = f["split"].get("training", float("nan"))
    return [
        f"- (1): the flow takes {flow.wall / raw.wall:.2f}× the raw training process; training "
        f"is {training / flow.wall:.0%} of it. The rest, split by the flow's Prefect task log "
        f"lines: {_split_text(f['split'])}. It does not grow with epochs: the ratio falls as "
        "they grow.",
        f"- (2): a no-change rerun takes {rerun['stack']:.1f} s with the stack up "
        f"({_meets(rerun['stack'], 'stack')} the ≤ {GOAL_RERUN_S['stack']:.0f} s goal) and "
        f"{rerun['no_stack']:.1f} s without ({_meets(rerun['no_stack'], 'no_stack')} the ≤ "
        f"{GOAL_RERUN_S['no_stack']:.0f} s goal). `visiongate retrain` decides \"nothing "
        "changed\" before it imports Prefect, MLflow or torch (visiongate.nochange: `dvc "
        "status` of the data stage, a re-hash of every pinned file, the identity tags read "
        "from the project's own sqlite store), so no Prefect server starts either way; "
        f"before this check the same reruns took 16.8 s / 8.1 s. `visiongate up` took "
        f"{f['up_s']:.1f} s, once. Runs (s): stack up {f['runs']['stack']}; no stack "
        f"{f['runs']['no_stack']}.",
        f"- (3): `make demo` peaks at {gib(demo.peak_rss)} of the machine's {gib(f['mem'])} "
        f"({demo.peak_rss / raw.peak_rss:.1f}× the raw training process) and takes "
        f"{demo.wall:.1f} s: training {f['demo_split'].get('training', float('nan')):.1f} s, "
        f"{_split_text(f['demo_split'])}.", *_memory_text(f), ""]


def _memory_text(f: dict) -> list[str]:
    """Where (3)'s memory goes: each process's own peak, the tree's PSS, the flow process's
    peak by task."""
    demo, raw, roles = f["demo"], f["raw"], f.get("demo_roles") or {}
    if not roles:
        return []
    own = roles.get("flow process", 0)
    spans = sorted(f.get("demo_spans", []), key=lambda s: -s[1])[:6]
    return [
        "- (3) memory, attributed: each process's own peak RSS — "
        + ", ".join(f"{role} {gib(rss)}" for role, rss in sorted(roles.items(), key=lambda r: -r[1]))
        + f". The flow process alone peaks at {gib(own)}, {own / raw.peak_rss:.1f}× the raw "
        f"training process. Summed PSS (shared library pages split between the processes that "
        f"map them instead of counted in each) peaks at {gib(demo.peak_pss)}, "
        f"{demo.peak_pss / raw.peak_rss:.1f}× raw. The flow process's peak RSS by task (highest "
        "first; RSS never falls much in CPython, so a task's peak includes what earlier ones "
        "left): " + ", ".join(f"{name} {gb:.2f} GiB" for name, gb in spans) + "."]
