"""A command run to completion with its process tree's memory sampled: the tree's summed
RSS (peak), each part's own RSS over time (the flow process, Prefect's server, DVC), and
the summed PSS (shared pages split between the processes that map them). bench_retrain.py.

A child that still runs its parent's command line is a fork caught before its exec (the
flow process starts `git`, `file`, `ldconfig` that way, about 0.1 s each): its RSS is the
parent's pages, shared copy-on-write, so it is left out of the sums instead of counting the
parent twice."""

from __future__ import annotations

import resource
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

OK_EXIT = (0, 3)  # 3: a gate refused the candidate; the flow still ran to the end


@dataclass
class Run:
    wall: float
    peak_rss: int  # bytes, summed over the process tree
    started: float  # time.time() at launch
    log: str
    peak_pss: int = 0  # bytes, proportional set size summed over the tree (shared pages split)
    samples: list = field(default_factory=list)  # (seconds since launch, {role: RSS bytes})
    cpu: float = 0.0  # user + system CPU seconds of the command and the descendants it waited for


def run_measured(cmd: list[str], cwd: Path, env: dict, log_path: Path) -> Run:
    """Run cmd to completion (output to log_path), sampling its tree's memory."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log_path, "w") as out:
        started, t0 = time.time(), time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        run = Run(0.0, 0, started, "")
        sampler = threading.Thread(target=_sample, args=(proc, run, t0), daemon=True)
        sampler.start()
        rc = proc.wait()
        run.wall = time.perf_counter() - t0
        sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    run.cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
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
            tree = [p for p in [root, *root.children(recursive=True)] if not _unexeced_fork(p)]
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


def _unexeced_fork(process: psutil.Process) -> bool:
    try:
        parent = process.parent()
        return parent is not None and process.cmdline() == parent.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return True  # gone already: nothing to count


def role_peaks(run: Run) -> dict[str, int]:
    """Each role's own peak RSS over the run."""
    peaks: dict[str, int] = {}
    for _, by_role in run.samples:
        for role, rss in by_role.items():
            peaks[role] = max(peaks.get(role, 0), rss)
    return peaks
