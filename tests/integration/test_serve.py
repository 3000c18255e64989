"""Registered champions as MLflow pyfunc: load by alias, and serve over REST.

Tiny real YOLO and U-Net models (64 px, 8 images, 1 epoch) are trained once for the
module, logged through tracking.log_model and promoted, as the retrain flow does.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pandas as pd
import pytest

from visiongate import models, moves, registry, serving, tracking
from visiongate.config import DetectConfig, MlflowConfig, SegmentConfig, SynthConfig
from visiongate.datasets import synth
from visiongate.datasets.coco import load_split

pytestmark = pytest.mark.integration

TINY = {"detect": DetectConfig(epochs=1, imgsz=64, batch=4),
        "segment": SegmentConfig(epochs=1, imgsz=64, batch=4, base_channels=8)}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """A project folder whose MLflow store holds shapes-detect and shapes-segment v1 = champion."""
    root = tmp_path_factory.mktemp("serve")
    (root / "params.yaml").write_text("dataset: shapes\n")  # default store: mlruns/mlflow.db
    data = root / "data"
    synth.generate(SynthConfig(seed=1, image_size=64, splits={"train": 8, "val": 4, "test": 4}),
                   data)
    uri = tracking.tracking_uri(root, MlflowConfig())
    experiment = tracking.ensure_experiment(uri, root, MlflowConfig())
    split = load_split(data / "test")
    images = [split.image_path(im) for im in split.images]
    checkpoints = {}
    for task, cfg in TINY.items():
        checkpoints[task] = models.train(cfg, data, root / "work" / task)
        run_id = tracking.start_run(uri, experiment, f"shapes-{task}", {}, {})
        model_uri = tracking.log_model(uri, run_id, checkpoints[task], images[0])
        version = registry.register(uri, f"shapes-{task}", model_uri, {"gate.passed": "true"})
        moves.promote(uri, f"shapes-{task}", version.version, "test fixture")
    return {"root": root, "uri": uri, "images": images, "checkpoints": checkpoints}


def _expected(store: dict, task: str, min_score: float) -> list[dict]:
    """What the checkpoint itself predicts, in the serving format."""
    checkpoint = store["checkpoints"][task]
    meta = models.CheckpointMeta.read(checkpoint)
    return [serving.to_record(meta, p, (64, 64), min_score)
            for p in models.predict(checkpoint, store["images"])]


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_load_champion_by_alias_predicts_like_the_checkpoint(store, task, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    model = mlflow.pyfunc.load_model(f"models:/shapes-{task}@champion")
    frame = pd.DataFrame({"image": [serving.encode_image(p) for p in store["images"]]})

    got = model.predict(frame, params={"min_score": 0.0})
    # at a request's floor the model and NMS skip what scores below it: the same answer
    floored = model.predict(frame, params={"min_score": 0.05})

    assert got == _expected(store, task, 0.0)
    assert floored == _expected(store, task, 0.05)
    key = "detections" if task == "detect" else "segments"
    assert any(r[key] for r in got), "the tiny model predicted nothing: nothing was compared"
    assert model.metadata.metadata["class_names"][-1] == "triangle"
    assert model.metadata.get_input_schema().input_names() == ["image"]


def test_checkout_returns_the_logged_checkpoint(store, tmp_path):
    version = registry.resolve(store["uri"], "models:/shapes-segment@champion")
    local = registry.checkout(store["uri"], version, tmp_path)
    original = store["checkpoints"]["segment"]
    assert models.CheckpointMeta.read(local) == models.CheckpointMeta.read(original)
    weights = models.CheckpointMeta.read(local).weights
    assert (local / weights).read_bytes() == (original / weights).read_bytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, payload: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                     data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _wait_ready(server: subprocess.Popen, port: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"server exited with {server.returncode}:\n{server.stdout.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"server on port {port} not ready after {timeout_s} s")


@pytest.fixture(params=["detect", "segment"])
def served(request, store):
    """`visiongate serve` (mlflow models serve, local env) on a free loopback port."""
    task, port = request.param, _free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": "/usr/bin:/bin"}
    server = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--model", f"models:/shapes-{task}@champion",
         "--root", str(store["root"]), "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)  # its own process group: the CLI becomes uvicorn
    try:
        _wait_ready(server, port)
        yield task, port
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_sigterm_to_the_serve_command_stops_the_server(store):
    """What systemd, a container runtime or `kill PID` does: SIGTERM to the one pid started
    (not its process group) leaves no server answering and no process behind."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--model", "models:/shapes-detect@champion",
         "--root", str(store["root"]), "--port", str(port)],
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _wait_ready(server, port)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        with pytest.raises(ProcessLookupError):  # nothing left in its process group
            os.killpg(server.pid, 0)
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
    finally:
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        server.wait()


def test_served_champion_answers_json_with_class_names(served, store):
    task, port = served
    image = serving.encode_image(store["images"][0])

    records = _post(port, {"dataframe_records": [{"image": image}, {"image": "bm90IGFuIGltYWdl"}],
                           "params": {"min_score": 0.0}})["predictions"]
    split = _post(port, {"dataframe_split": {"columns": ["image"], "data": [[image]]},
                         "params": {"min_score": 0.0}})["predictions"]

    assert records[0] == split[0] == _expected(store, task, 0.0)[0]
    assert records[1]["error"].startswith("image 1: not a readable image")
    names = {"circle", "square", "triangle"}
    if task == "detect":
        assert records[0]["detections"], "no detection to check"
        for det in records[0]["detections"]:
            assert len(det["box"]) == 4 and 0.0 <= det["score"] <= 1.0
            assert det["class_name"] in names and 1 <= det["label"] <= 3
    else:
        assert all(seg["class_name"] in names for seg in records[0]["segments"])
        assert sum(seg["pixels"] for seg in records[0]["segments"]) <= 64 * 64
