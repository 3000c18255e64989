"""Outages lose nothing: an MLflow tracking server stopped mid-flow, and a retrain killed
with SIGKILL mid-epoch. Each test checks the registry, the data and the next run afterwards."""

from __future__ import annotations

import copy
import importlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from conftest import TINY_PARAMS, make_project  # tests/integration/conftest.py
from flows.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.fault,
              pytest.mark.server]  # the tracking server test (the marks are per module)
REPO = Path(__file__).resolve().parents[2]
VISIONGATE = REPO / ".venv" / "bin" / "visiongate"
SEGMENT = "shapes-segment"


def _segment_only(**segment) -> dict:
    params = copy.deepcopy(TINY_PARAMS)
    params["detect"]["enabled"] = False
    params["segment"].update(segment)
    return params


def _versions(client: MlflowClient, name: str) -> list[str]:
    return sorted(str(v.version) for v in client.search_model_versions(f"name='{name}'"))


def _champion(client: MlflowClient, name: str) -> str:
    return str(client.get_model_version_by_alias(name, "champion").version)


# ---- MLflow tracking server stopped mid-flow ---------------------------------------------
def _reimport_io_tasks(monkeypatch) -> None:
    """Re-read VISIONGATE_IO_RETRY_DELAYS as a fresh `visiongate` process would (it is read
    when tasks.tracking is imported, which an earlier test may have done) and hand the
    re-made I/O tasks to the retrain flow for this test only."""
    from prefect import Task

    import flows.retrain
    import flows.scoring

    for module_name in ("tasks.tracking", "tasks.registry"):
        module = importlib.reload(importlib.import_module(module_name))
        for flow_module in (flows.retrain, flows.scoring):
            used = [name for name, value in vars(flow_module).items()
                    if isinstance(value, Task) and value.fn.__module__ == module_name]
            for name in used:
                monkeypatch.setattr(flow_module, name, getattr(module, name))


@pytest.fixture
def quick_io_retries(monkeypatch):
    """Two I/O retries 0.5 s apart (not 2, 10, 30 s), and no retries inside MLflow's own
    HTTP client, so that the retries seen are Prefect's."""
    monkeypatch.setenv("VISIONGATE_IO_RETRY_DELAYS", "0.5,0.5")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    _reimport_io_tasks(monkeypatch)
    import flows.retrain

    assert flows.retrain.register.retries == 2  # the flow uses the re-made tasks
    yield
    monkeypatch.delenv("VISIONGATE_IO_RETRY_DELAYS")
    for module_name in ("tasks.tracking", "tasks.registry"):  # default delays again
        importlib.reload(importlib.import_module(module_name))


def _task_runs(flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[flow_run_id])))


def _stop_server_after_training(monkeypatch, mlflow_server, server) -> list:
    """Patch training so that the first train call, once finished, stops the tracking server;
    returns the list that receives the id of the Prefect flow run it happened in."""
    from prefect import runtime

    from visiongate import models

    real_train, stopped_in = models.train, []

    def train_then_stop_server(*args, **kwargs):
        checkpoint = real_train(*args, **kwargs)
        if not stopped_in:
            stopped_in.append(runtime.flow_run.id)
            mlflow_server.stop(server)
        return checkpoint

    monkeypatch.setattr(models, "train", train_then_stop_server)
    return stopped_in


def test_tracking_server_stopped_mid_flow_fails_clearly_and_the_next_run_succeeds(
        tmp_path, mlflow_server, prefect_harness, quick_io_retries, monkeypatch, capsys):
    store, artifacts = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "artifacts"
    server = mlflow_server.start(store, artifacts)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    project = make_project(tmp_path / "project", _segment_only())
    assert main(["retrain", "--root", str(project)]) == 0
    client = MlflowClient(server.url)
    assert _versions(client, SEGMENT) == ["1"] and _champion(client, SEGMENT) == "1"

    (project / "params.yaml").write_text(yaml.safe_dump(_segment_only(seed=7)))
    stopped_in = _stop_server_after_training(monkeypatch, mlflow_server, server)
    capsys.readouterr()
    assert main(["retrain", "--root", str(project)]) == 1
    err = capsys.readouterr().err
    assert stopped_in, "training never ran: the outage was not injected"
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith(f"visiongate: error: MLflow tracking server {server.url} "
                                "unreachable"), err[-3000:]

    # The first I/O task after training ran 3 times (2 retries) before the flow gave up.
    failed = [t for t in _task_runs(stopped_in[0]) if t.state_type.value == "FAILED"]
    assert [t.name.split("-")[0] for t in failed] == ["alias_version"], failed
    assert failed[0].run_count == 3

    mlflow_server.start(store, artifacts, port=server.port)  # back, same port and store
    assert _versions(client, SEGMENT) == ["1"], "a half-registered version was left behind"
    assert _champion(client, SEGMENT) == "1"
    assert set(client.get_model_version(SEGMENT, "1").aliases) == {"champion", "challenger"}

    assert main(["retrain", "--root", str(project)]) == 0
    assert _versions(client, SEGMENT) == ["1", "2"] and _champion(client, SEGMENT) == "2"
    first, cut_off, recovered = client.search_runs(
        [client.get_experiment_by_name("visiongate").experiment_id],
        order_by=["attributes.start_time ASC"])
    assert cut_off.info.status != "FINISHED"
    assert [client.get_model_version(SEGMENT, v).run_id for v in ("1", "2")] == [
        first.info.run_id, recovered.info.run_id]


# ---- `visiongate retrain` killed with SIGKILL mid-epoch -----------------------------------
EPOCHS = 3  # of a second or more each here: the kill lands while one runs
SYNTH_16 = {"seed": 1, "image_size": 64, "splits": {"train": 16, "val": 4, "test": 4}}


def _shell_env() -> dict:
    """A `visiongate` started from a shell, reporting to a running Prefect server (here the
    test harness's, which spares each run the start of a temporary one)."""
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_TRACKING_URI"))}
    return {**env, "PREFECT_API_URL": PREFECT_API_URL.value()}


def _last_checkpoint_appears(project: Path, proc: subprocess.Popen, timeout: float) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list((project / ".cache" / "train").glob(f"{SEGMENT}-*/last.pt"))
        if found:
            return found[0]
        assert proc.poll() is None, f"retrain ended ({proc.returncode}) before epoch 1"
        time.sleep(0.05)
    raise AssertionError(f"no last.pt after {timeout:.0f} s")


def _epochs_printed(output: str) -> list[int]:
    return [int(n) for n in re.findall(rf"^unet epoch (\d+)/{EPOCHS} ", output, re.MULTILINE)]


def _run_of_each_attempt(client: MlflowClient) -> tuple:
    runs = client.search_runs([client.get_experiment_by_name("visiongate").experiment_id],
                              order_by=["attributes.start_time ASC"])
    assert len(runs) == 2, [r.info.run_name for r in runs]
    return tuple(runs)


def _flow_run_state(flow_run_id: str) -> str:
    from uuid import UUID

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(flow_run_id)).state.type.value


def _metric_steps(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "train_loss"))


def test_retrain_killed_mid_epoch_resumes_from_its_last_checkpoint(tmp_path, prefect_harness):
    project = make_project(tmp_path / "project",
                           {**_segment_only(epochs=EPOCHS), "synth": SYNTH_16})
    env, command = _shell_env(), [str(VISIONGATE), "retrain", "--root", str(project)]
    killed = subprocess.Popen(command, env=env, cwd=project, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = _last_checkpoint_appears(project, killed, timeout=300)
    os.killpg(killed.pid, signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL
    finished = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
    assert 1 <= finished < EPOCHS, "the kill came after training had finished"
    assert not (last.parent / "meta.json").exists()

    lock = (project / "dvc.lock").read_bytes()
    client = MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
    assert client.search_registered_models() == []  # nothing registered by the killed run
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=project,
                            capture_output=True, text=True, timeout=120)
    assert "up to date" in status.stdout, status.stdout + status.stderr  # data as pinned

    resumed = subprocess.run(command, env=env, cwd=project, capture_output=True, text=True,
                             timeout=600)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert f"unet: resuming after epoch {finished} from {last}" in output
    assert _epochs_printed(output) == list(range(finished + 1, EPOCHS + 1))
    first, second = _run_of_each_attempt(client)
    # killed mid-training, its run left RUNNING: the next retrain marked it FAILED, with why,
    # and its Prefect flow run (left Running) Crashed
    assert first.info.status == "FAILED", first.info.status
    assert first.data.tags["visiongate.failure"].startswith(
        f"orphaned: its process {killed.pid} on ")
    assert _flow_run_state(first.data.tags["prefect.flow_run_id"]) == "CRASHED"
    assert second.data.tags["prefect.flow_run_id"] != first.data.tags["prefect.flow_run_id"]
    assert set(_metric_steps(client, first.info.run_id)) <= set(range(1, finished + 1))
    assert _metric_steps(client, second.info.run_id) == list(range(finished + 1, EPOCHS + 1))
    assert _versions(client, SEGMENT) == ["1"] and _champion(client, SEGMENT) == "1"
    assert client.get_model_version(SEGMENT, "1").run_id == second.info.run_id
    assert (project / "dvc.lock").read_bytes() == lock
