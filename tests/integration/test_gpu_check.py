"""benchmarks/gpu_check.sh in its CPU dry run: the script that checks the CUDA paths keeps
running to completion here (CI has no GPU), names every check that needs CUDA, and writes
its table to the file it is given, not BENCHMARKS.md."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_the_gpu_check_dry_run_completes_on_the_cpu(tmp_path):
    before = (REPO / "BENCHMARKS.md").read_bytes()
    out = tmp_path / "gpu_check.md"

    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)

    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    section = out.read_text()
    assert "\n## GPU check\n" in section
    for family in ("detect rtdetr", "segment maskrcnn", "classify efficientnet_b0"):
        assert f"| {family} | needs CUDA" in section
    for family in ("detect yolo", "segment unet", "classify resnet18"):
        assert f"| {family} | ok |" in section  # the subset that runs on the CPU
    assert "| latency onnx: detect yolo | ok |" in section
    assert (REPO / "BENCHMARKS.md").read_bytes() == before
