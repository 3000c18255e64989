"""BENCHMARKS.md bookkeeping shared by every benchmark: each owns one `## ` section and
replaces only that, so running one benchmark never erases another's figures."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
HEADER = ("# Benchmarks\n\nTimed comparisons, run by hand (`make bench`: the speed figures, "
          "≈ 50 min on 2 cores; `make bench-data`: real data and scale, over an hour); never "
          "part of the test suite. Each section names the command that regenerates it and "
          "the machine it ran on.\n")


def cpuinfo_field(name: str) -> str | None:
    """The first `name` line of /proc/cpuinfo ("model name", "flags"), None where absent."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                 if line.startswith(name)), None)


def machine() -> str:
    """Cores, CPU model, memory, GPU and Python of this machine, in one line."""
    model = cpuinfo_field("model name") or platform.processor() or "unknown"
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem = next((int(line.split()[1]) / 2**20 for line in meminfo.splitlines()
                if line.startswith("MemTotal")), float("nan"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:
        gpu = "unknown"
    return (f"{cores} cores ({model}), {mem:.0f} GiB memory, GPU {gpu}, "
            f"Python {platform.python_version()}")


def update_section(section: str, path: Path = BENCHMARKS) -> Path:
    """Replace the `## ` section with the same heading as `section` (or append it)."""
    heading = section.splitlines()[0]
    if not heading.startswith("## "):
        raise ValueError(f"a section starts with '## ', not {heading!r}")
    text = path.read_text() if path.is_file() else HEADER
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    body = section.rstrip("\n") + "\n\n"
    text = pattern.sub(lambda _: body, text) if pattern.search(text) else (
        text.rstrip("\n") + "\n\n" + body)
    path.write_text(text.rstrip("\n") + "\n")
    return path
