"""A training process killed (SIGKILL) after epoch 1 of 3 resumes at epoch 2 on the next run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from visiongate.config import SynthConfig
from visiongate.datasets.synth import generate

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]

# Trains 3 epochs, appending each finished epoch to epochs.jsonl; with KILL_AFTER set, the
# process SIGKILLs itself right after that epoch was reported (its checkpoint is on disk).
SCRIPT = """
import json, os, signal, sys
from pathlib import Path
from visiongate import models
from visiongate.config import DetectConfig
data, out, family = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
kill_after = int(os.environ.get("KILL_AFTER", "0"))
cfg = DetectConfig(family=family, epochs=3, imgsz=64, batch=4, device="cpu", seed=1)
def on_epoch(epoch, metrics):
    with open(out.parent / "epochs.jsonl", "a") as f:
        f.write(json.dumps({"epoch": epoch}) + "\\n")
    if epoch == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
models.train(cfg, data, out, on_epoch)
"""


def _run(data: Path, out: Path, family: str, kill_after: int) -> subprocess.CompletedProcess:
    env = {**__import__("os").environ, "KILL_AFTER": str(kill_after)}
    return subprocess.run([sys.executable, "-c", SCRIPT, str(data), str(out), family], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)


def _epochs(log: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in log.read_text().splitlines()]


@pytest.mark.parametrize("family", ["fasterrcnn", "yolo"])
def test_killed_run_resumes_from_its_last_checkpoint(family, tmp_path):
    data = tmp_path / "data"
    generate(SynthConfig(seed=2, image_size=64, splits={"train": 8, "val": 4}), data)
    out, log = tmp_path / "run" / "ckpt", tmp_path / "run" / "epochs.jsonl"
    out.parent.mkdir()

    killed = _run(data, out, family, kill_after=1)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert _epochs(log) == [1]
    assert not (out / "meta.json").exists()

    log.unlink()
    resumed = _run(data, out, family, kill_after=0)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _epochs(log) == [2, 3], "did not continue at epoch 2"
    assert "resuming" in resumed.stdout + resumed.stderr
    assert json.loads((out / "meta.json").read_text())["family"] == family
    if family == "yolo":
        rows = (out / "ultralytics" / "results.csv").read_text().strip().splitlines()
        assert len(rows) == 1 + 3  # header + epochs 1..3 in one results file
    else:
        assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 3
