"""Retrain flow vs raw ultralytics training, no-change reruns, and `make demo`'s peak memory.

    .venv/bin/python benchmarks/bench_retrain.py [--epochs N] [--repeats 3] [--write]

Subprocesses in fresh temporary projects (repo's dvc.yaml and params.yaml, `dvc init`):
1. `visiongate retrain`, segment disabled, vs a raw `ultralytics.YOLO(model).train(...)`
   process on the same data with visiongate's train() arguments; the flow's wall is split
   by its Prefect task log lines. 2. `visiongate retrain` on the unchanged project, median
   of `--repeats`, with `visiongate up` and without. 3. The full demo params (`make demo`):
   wall and peak summed RSS of the process tree. `--write` updates BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.report import update_section  # noqa: E402
from benchmarks.measured_run import Run, role_peaks, run_measured  # noqa: E402
from benchmarks.retrain_section import gib, intro, readings, rows  # noqa: E402

BIN = Path(sys.executable).parent
CLI = [str(BIN / "visiongate")] if (BIN / "visiongate").exists() else \
    [sys.executable, "-m", "flows.cli"]
# The retrain flow's Prefect tasks, grouped into the phases its wall is split into.
PHASES = {"data": ("version_data", "verify_data", "unchanged_version", "validate_data",
                   "describe_data", "augment_preview"),
          "training": ("train_model",),
          "evaluation": ("evaluate_model", "alias_version", "checkout", "evaluate_robustness",
                         "plot_robustness", "gate"),
          "tracking": ("start_run", "log_dataset", "log_results", "log_model", "register",
                       "promote")}
LOG_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) \| \w+\s*\| (.*)$")


def span_peaks(run: Run) -> list[tuple[str, float]]:
    """The flow process's peak RSS (GiB) in each task span of its log, in order."""
    out = []
    for name, start, end in task_spans(run):
        inside = [s.get("flow process", 0) for t, s in run.samples if start <= t <= end]
        if inside:
            out.append((name, max(inside) / 2**30))
    return out


def cli_env(prefect_home: Path) -> dict:
    """No Prefect server, MLflow store or stack port from the caller's shell; the venv first
    on PATH (DVC's stage runs `python`); a Prefect home of the benchmark's own."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")
           and not re.match(r"VISIONGATE_(PREFECT|MLFLOW)_", k)}
    return {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


def make_project(root: Path, epochs: int | None, segment: bool, edit=None) -> Path:
    """A fresh project as tests/integration/conftest.py builds one, with the repo's params
    (segment and classify on, or both off; epochs overridden, then `edit(params)`) and the
    local stack on free ports."""
    from visiongate.stack import free_port

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["segment"]["enabled"] = params["classify"]["enabled"] = segment  # (1): detect only
    for task in ("detect", "segment"):
        params[task]["epochs"] = epochs or params[task]["epochs"]
    params["stack"] = {name: {"host": "127.0.0.1", "port": free_port()}
                       for name in ("prefect", "mlflow")}
    if edit is not None:
        edit(params)
    root.mkdir(parents=True)
    (root / "dvc.yaml").write_bytes((REPO / "dvc.yaml").read_bytes())
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "visiongate").symlink_to(REPO / "visiongate", target_is_directory=True)
    for cmd in (["init", "--no-scm", "-q"], ["config", "core.analytics", "false"]):
        subprocess.run([sys.executable, "-m", "dvc", *cmd], cwd=root, check=True)
    return root


def retrain(project: Path, env: dict, log_path: Path) -> Run:
    return run_measured([*CLI, "retrain", "--root", str(project)], project, env, log_path)


def task_spans(run: Run) -> list[tuple[str, float, float]]:
    """(name, start, end) in seconds since launch, from the flow's Prefect log lines: start-up
    until "Beginning flow run", each task from the previous task's "Finished" line (or the
    flow's start) to its own, then shutdown. A task that runs more than once is numbered."""
    lt = time.localtime(run.started)
    launch = lt.tm_hour * 3600 + lt.tm_min * 60 + lt.tm_sec + run.started % 1
    spans, last, seen = [], None, {}
    for match in filter(None, map(LOG_LINE.match, run.log.splitlines())):
        h, m, s, ms, text = match.groups()
        at = (int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000 - launch) % 86400
        task = re.match(r"Task run '(\w+)-\w+' - Finished in state", text)
        if "Beginning flow run" in text:
            spans, last = [("startup", 0.0, at)], at
        elif task and last is not None:
            seen[task[1]] = seen.get(task[1], 0) + 1
            name = task[1] + (f" #{seen[task[1]]}" if seen[task[1]] > 1 else "")
            spans.append((name, last, at))
            last = at
    if last is not None:
        spans.append(("finish", last, run.wall))
    return spans


def phases(run: Run) -> dict[str, float]:
    """The flow's wall split into PHASES by task_spans. Empty when no log line is found."""
    split: dict[str, float] = {}
    for name, start, end in task_spans(run):
        task = name.split(" #")[0]
        phase = task if task in ("startup", "finish") else next(
            (p for p, names in PHASES.items() if task in names), "other")
        split[phase] = split.get(phase, 0.0) + end - start
    return split


def raw_train(project: Path, out: Path) -> None:
    """(Subprocess) raw ultralytics on a fresh export of the project's data, with the train()
    arguments and thread count visiongate uses; prints export + train() wall as JSON."""
    from visiongate.config import load_params
    from visiongate.models import yolo

    params = load_params(project / "params.yaml", deep=False)
    cfg = params.detect
    t0 = time.perf_counter()  # from here on as the flow's train_model task (torch imported)
    ultralytics = yolo._ultralytics()  # offline, ultralytics' own MLflow callback off
    device = yolo.ultralytics_device(cfg.device)
    data_yaml = yolo.export_yolo(project / "data" / "prepared" / params.dataset,
                                 out / "yolo-data")
    model = ultralytics.YOLO(cfg.model, task="detect")
    with yolo._all_cores():
        model.train(data=str(data_yaml), epochs=cfg.epochs, imgsz=cfg.imgsz, batch=cfg.batch,
                    nbs=cfg.batch, optimizer="AdamW", lr0=cfg.lr, seed=cfg.seed,
                    deterministic=True, device=device, amp=device not in ("cpu", "mps"),
                    project=str(out), name="raw", exist_ok=True, plots=False, workers=0,
                    verbose=False, pretrained=False, **cfg.ultralytics_args,
                    # the params' albumentations pipeline, as visiongate hands it over
                    **({"augmentations": yolo.build_transforms(cfg.augment)}
                       if cfg.augment else {}))
    print(json.dumps({"train_s": time.perf_counter() - t0}))


def bench_flow(work: Path, env: dict, epochs: int | None) -> tuple[Path, dict]:
    """(1) The flow, detect only, then raw ultralytics on the same data."""
    project = make_project(work / "detect-only", epochs, segment=False)
    # the data generated and pinned beforehand, as in a project whose data is versioned
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=project, env=env, check=True)
    print("(1) visiongate retrain, segment and classify disabled, data pinned ...", flush=True)
    flow = retrain(project, env, work / "flow.log")
    print(f"    {flow.wall:.1f} s", flush=True)
    print("(1) raw ultralytics train() on the same data ...", flush=True)
    raw = run_measured([sys.executable, __file__, "--raw-train", str(project), str(work / "raw")],
                       REPO, env, work / "raw.log")
    raw_train_s = json.loads(raw.log.strip().splitlines()[-1])["train_s"]
    print(f"    {raw.wall:.1f} s (export + train() {raw_train_s:.1f} s)", flush=True)
    return project, {"flow": flow, "raw": raw, "raw_train_s": raw_train_s}


def code_registered(project: Path) -> bool:
    """Whether a registered detect version carries the current sources' code hash."""
    from mlflow import MlflowClient

    from visiongate.config import load_params
    from visiongate.lineage import code_hash
    from visiongate.tracking import tracking_uri

    params = load_params(project / "params.yaml", deep=False)
    client = MlflowClient(tracking_uri(project, params.mlflow))
    versions = client.search_model_versions(f"name='{params.dataset}-detect'")
    return any(v.tags.get("code_hash") == code_hash() for v in versions)


def reruns(project: Path, env: dict, repeats: int, work: Path, tag: str) -> list[Run]:
    """`repeats` timed no-change reruns. When the sources changed since the last retrain (a
    shared checkout being edited), one untimed retrain first registers the new code."""
    runs = []
    for i in range(repeats):
        if not code_registered(project):
            print("    the code changed since the last retrain: one untimed retrain first")
            retrain(project, env, work / f"rebase-{tag}-{i}.log")
        run = retrain(project, env, work / f"rerun-{tag}-{i}.log")
        if "nothing changed since" not in run.log:
            raise RuntimeError(f"rerun {i} of the unchanged project retrained:\n{run.log[-3000:]}")
        print(f"    {tag} {i + 1}/{repeats}: {run.wall:.1f} s", flush=True)
        runs.append(run)
    return runs


def bench_reruns(project: Path, env: dict, repeats: int, work: Path) -> dict:
    """(2) No-change reruns: (b) Prefect's temporary server per run, (a) the stack up."""
    print("(2b) no-change reruns, no stack (temporary Prefect server) ...", flush=True)
    no_stack = reruns(project, env, repeats, work, "no stack")
    print("(2a) no-change reruns after `visiongate up` ...", flush=True)
    t0 = time.perf_counter()
    try:
        subprocess.run([*CLI, "up", "--root", str(project)], cwd=project, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        up_s = time.perf_counter() - t0
        stack = reruns(project, env, repeats, work, "stack up")
    finally:
        subprocess.run([*CLI, "down", "--root", str(project)], cwd=project, env=env,
                       stdout=subprocess.DEVNULL)
    if any("Starting temporary server" in run.log for run in stack):
        raise RuntimeError("with the stack up, a rerun still started a temporary Prefect server")
    return {"no_stack": no_stack, "stack": stack, "up_s": up_s}


def bench_demo(work: Path, env: dict, epochs: int | None) -> Run:
    """(3) The full demo params (detect, segment, classify) in a fresh project."""
    project = make_project(work / "demo", epochs, segment=True)
    print("(3) visiongate retrain, full demo params (detect, segment, classify) ...", flush=True)
    run = retrain(project, env, work / "demo.log")
    print(f"    {run.wall:.1f} s, peak RSS {gib(run.peak_rss)}", flush=True)
    return run


def migrate_prefect_home(env: dict) -> float:
    """The Prefect database's one-time creation, outside every timed run."""
    t0 = time.perf_counter()
    subprocess.run([str(BIN / "prefect"), "server", "database", "upgrade", "-y"], env=env,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def figures(r: dict) -> dict:
    """Every number the section shows, from the runs."""
    flow, raw, demo = r["flow"]["flow"], r["flow"]["raw"], r["demo"]
    reruns = {k: r["reruns"][k] for k in ("stack", "no_stack")}
    return {"flow": flow, "raw": raw, "demo": demo, "raw_train_s": r["flow"]["raw_train_s"],
            "split": phases(flow), "demo_split": phases(demo), "demo_roles": role_peaks(demo),
            "demo_spans": span_peaks(demo), "up_s": r["reruns"]["up_s"],
            "mem": psutil.virtual_memory().total, "migrate_s": r["migrate_s"],
            "rerun": {k: statistics.median(x.wall for x in v) for k, v in reruns.items()},
            "start": {k: statistics.median(phases(x).get("startup", float("nan")) for x in v)
                      for k, v in reruns.items()},
            "runs": {k: ", ".join(f"{x.wall:.1f}" for x in v) for k, v in reruns.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="epochs of both tasks (default: params.yaml's)")
    parser.add_argument("--repeats", type=int, default=3, help="no-change reruns per setup")
    parser.add_argument("--write", action="store_true", help="update its section of BENCHMARKS.md")
    parser.add_argument("--raw-train", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_train:
        return raw_train(*args.raw_train)
    with tempfile.TemporaryDirectory(prefix="vg-bench-retrain-") as tmp:
        work = Path(tmp)
        env = cli_env(work / "prefect-home")
        results = {"migrate_s": migrate_prefect_home(env)}
        project, results["flow"] = bench_flow(work, env, args.epochs)
        results["reruns"] = bench_reruns(project, env, args.repeats, work)
        results["demo"] = bench_demo(work, env, args.epochs)
        f = figures(results)
        text = "\n".join(intro(f, args) + rows(f) + readings(f))
    print(text)
    if args.write:
        print(f"wrote {update_section(text)}")


if __name__ == "__main__":
    main()
