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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.report import update_section  # noqa: E402
from benchmarks.retrain_section import gib, intro, readings, rows  # noqa: E402

BIN = Path(sys.executable).parent
CLI = [str(BIN / "visiongate")] if (BIN / "visiongate").exists() else \
    [sys.executable, "-m", "flows.cli"]
OK_EXIT = (0, 3)  # 3: a gate refused the candidate; the flow still ran to the end
# The retrain flow's Prefect tasks, grouped into the phases its wall is split into.
PHASES = {"data": ("version_data", "verify_data", "unchanged_version", "validate_data",
                   "describe_data", "augment_preview"),
          "training": ("train_model",),
          "evaluation": ("evaluate_model", "alias_version", "checkout", "evaluate_robustness",
                         "plot_robustness", "gate"),
          "tracking": ("start_run", "log_dataset", "log_results", "log_model", "register",
                       "promote")}
LOG_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) \| \w+\s*\| (.*)$")


@dataclass
class Run:
    wall: float
    peak_rss: int  # bytes, summed over the process tree
    started: float  # time.time() at launch
    log: str
    peak_pss: int = 0  # bytes, proportional set size summed over the tree (shared pages split)
    samples: list = field(default_factory=list)  # (seconds since launch, {role: RSS bytes})


def run_measured(cmd: list[str], cwd: Path, env: dict, log_path: Path) -> Run:
    """Run cmd to completion (output to log_path), sampling its tree's memory."""
    with open(log_path, "w") as out:
        started, t0 = time.time(), time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        run = Run(0.0, 0, started, "")
        sampler = threading.Thread(target=_sample, args=(proc, run, t0), daemon=True)
        sampler.start()
        rc = proc.wait()
        run.wall = time.perf_counter() - t0
        sampler.join()
    run.log = log_path.read_text(errors="replace")
    if rc not in OK_EXIT:
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}; its output ends:\n{run.log[-3000:]}")
    return run


def _role(process: psutil.Process, root_pid: int) -> str:
    """Which part of the tree a process is: the flow's own process, Prefect's server, DVC."""
    if process.pid == root_pid:
        return "flow process"
    cmd = " ".join(process.cmdline())
    if "prefect" in cmd and ("server" in cmd or "uvicorn" in cmd):
        return "Prefect server"
    return "DVC" if "dvc" in cmd else f"other ({process.name()})"


def _memory(process: psutil.Process, pss: bool) -> int:
    try:
        return process.memory_full_info().pss if pss else process.memory_info().rss
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, AttributeError):
        return 0


def _sample(proc: subprocess.Popen, run: Run, t0: float) -> None:
    """Every 0.2 s until proc ends: the tree's RSS by role (peak of the sum kept in run), and
    every 5th time its summed PSS (smaps is slower to read)."""
    try:
        root = psutil.Process(proc.pid)
        n = 0
        while proc.poll() is None:
            tree = [root, *root.children(recursive=True)]
            by_role: dict[str, int] = {}
            for process in tree:
                try:
                    role = _role(process, root.pid)
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                by_role[role] = by_role.get(role, 0) + _memory(process, pss=False)
            run.samples.append((time.perf_counter() - t0, by_role))
            run.peak_rss = max(run.peak_rss, sum(by_role.values()))
            if n % 5 == 0:
                run.peak_pss = max(run.peak_pss, sum(_memory(p, pss=True) for p in tree))
            n += 1
            time.sleep(0.2)
    except psutil.NoSuchProcess:
        pass


def role_peaks(run: Run) -> dict[str, int]:
    """Each role's own peak RSS over the run."""
    peaks: dict[str, int] = {}
    for _, by_role in run.samples:
        for role, rss in by_role.items():
            peaks[role] = max(peaks.get(role, 0), rss)
    return peaks


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
    print("(1) visiongate retrain, segment and classify disabled ...", flush=True)
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
