"""Work pools instead of `serve`: `visiongate deploy --pool` registers the deployments with a
real `prefect server` (loopback), two real `prefect worker start --pool` processes run them,
and the retrain deployment's concurrency limit of 1 makes a second run wait for the first.
A worker killed mid-training, with its flow-run process: the run ends Crashed and the next
retrain, on the other worker, resumes from the checkpoint."""

from __future__ import annotations

import copy
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import TINY_PARAMS, delete_deployments, make_project  # tests/integration/conftest.py

pytestmark = [pytest.mark.integration, pytest.mark.server]
BIN = Path(sys.executable).parent


def _env(api: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_TRACKING_URI"))}
    return {**env, "PREFECT_API_URL": api, "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}


def _deploy(project: Path, env: dict) -> str:
    """`visiongate deploy --pool` to a fresh pool; returns the pool's name."""
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    deployed = subprocess.run([str(BIN / "visiongate"), "deploy", "--pool", pool, "--root",
                               str(project)], env=env, capture_output=True, text=True, timeout=120)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    assert "retrain/scheduled" in deployed.stdout and f"--pool {pool}" in deployed.stdout
    return pool


def _worker(pool: str, name: str, env: dict, log: Path) -> subprocess.Popen:
    """`prefect worker start --pool POOL` in a session of its own, output to log."""
    with open(log, "w") as out:
        return subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", pool,
                                 "--name", name], env=env, cwd=log.parent, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _stopped(worker: subprocess.Popen) -> None:
    """Wait for a terminated worker; SIGKILL its session after 60 s. Seen once under load:
    `prefect worker start` forwarded SIGTERM as SIGINT and its worker never exited, with no
    flow run in flight. How a worker stops is not what these tests check."""
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)


def _wait_final(client, ids: list, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [client.read_flow_run(i) for i in ids]
        if all(r.state is not None and r.state.is_final() for r in runs):
            return runs
        time.sleep(1)
    raise AssertionError(f"flow runs not final after {timeout} s: "
                         f"{[(r.name, r.state_name) for r in runs]}")


def test_two_process_workers_run_the_retrain_deployment_one_at_a_time(tmp_path, prefect_server):
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    params = copy.deepcopy(TINY_PARAMS)
    params["detect"]["enabled"] = False  # the U-Net: the cheapest model that trains
    project = make_project(tmp_path / "project", params)
    env = _env(prefect_server)
    pool = _deploy(project, env)
    workers = [_worker(pool, f"worker-{i}", env, tmp_path / f"worker-{i}.log") for i in (1, 2)]
    try:
        with temporary_settings({PREFECT_API_URL: prefect_server}), \
                get_client(sync_client=True) as client:
            started = [run_deployment("retrain/scheduled", timeout=0) for _ in range(2)]
            runs = _wait_final(client, [r.id for r in started], timeout=420)
            histories = [[s.name for s in client.read_flow_run_states(r.id)] for r in runs]
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            _stopped(worker)
        delete_deployments(prefect_server)
    worker_output = "".join((tmp_path / f"worker-{i}.log").read_text() for i in (1, 2))
    assert [r.state_name for r in runs] == ["Completed", "Completed"], worker_output[-3000:]
    first, second = sorted(runs, key=lambda r: r.start_time)
    assert first.end_time <= second.start_time  # never overlapping
    # the second one waited on the deployment's limit rather than starting late by chance
    assert any("AwaitingConcurrencySlot" in h for h in histories), histories
    assert {r.work_pool_name for r in runs} == {pool}

    from mlflow.tracking import MlflowClient
    store = MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
    champion = store.get_model_version_by_alias("shapes-segment", "champion")
    assert str(champion.version) == "1"  # the first trained; the second found nothing changed
    flow_runs = {str(r.id) for r in runs}
    assert store.get_run(champion.run_id).data.tags["prefect.flow_run_id"] in flow_runs


# ---- a worker killed mid-training ------------------------------------------------------
EPOCHS = 4  # under a second each on an idle machine: the kill lands before the last


def _last_checkpoint(project: Path, worker: subprocess.Popen, timeout: float) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list((project / ".cache/train").glob("shapes-segment-*/last.pt"))
        if found:
            return found[0]
        assert worker.poll() is None, f"the worker ended ({worker.returncode})"
        time.sleep(0.05)
    raise AssertionError(f"no last.pt after {timeout:.0f} s")


def _wait_state(client, flow_run_id, names: set[str], timeout: float) -> None:
    """Until the flow run has been in a state of one of these names."""
    deadline = time.monotonic() + timeout
    while not names & {s.name for s in client.read_flow_run_states(flow_run_id)}:
        assert time.monotonic() < deadline, f"flow run never {names} in {timeout:.0f} s"
        time.sleep(0.5)


def _kill_machine(worker: subprocess.Popen) -> list[int]:
    """SIGKILL the worker and every process under it, as when its machine dies: by process
    group, each flow run being started in a session of its own. Returns their pids."""
    import psutil

    procs = [psutil.Process(worker.pid), *psutil.Process(worker.pid).children(recursive=True)]
    groups = {os.getpgid(p.pid) for p in procs} - {os.getpgid(0)}
    for group in groups:
        os.killpg(group, signal.SIGKILL)
    _, alive = psutil.wait_procs(procs, timeout=60)
    assert not alive, alive
    worker.wait(timeout=60)
    return [p.pid for p in procs]


@pytest.mark.fault
def test_a_worker_killed_mid_training_crashes_its_run_and_the_next_run_resumes(
        tmp_path, prefect_server):
    """A worker and the flow-run process it started are SIGKILLed mid-training, as when its
    machine dies. Nothing is left to report the run: Prefect shows it Running and keeps its
    slot of the retrain deployment's concurrency limit, so the next retrain waits. A flow
    that closes orphans on this host (here the weekly champion check, which no limit holds
    back) marks its MLflow run FAILED and its flow run Crashed, which frees the slot; the
    waiting retrain then runs on the other worker, resumes from last.pt and registers."""
    import torch
    from mlflow.tracking import MlflowClient
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    params = copy.deepcopy(TINY_PARAMS)
    params["detect"]["enabled"] = False
    params["segment"]["epochs"] = EPOCHS
    params["synth"]["splits"]["train"] = 16
    params["serve"] = {"export": []}
    project = make_project(tmp_path / "project", params)
    env = _env(prefect_server)
    pool = _deploy(project, env)
    first, second = _worker(pool, "worker-1", env, tmp_path / "worker-1.log"), None
    try:
        with temporary_settings({PREFECT_API_URL: prefect_server}), \
                get_client(sync_client=True) as client:
            killed_run = run_deployment("retrain/scheduled", timeout=0)
            _wait_state(client, killed_run.id, {"Pending", "Running"}, timeout=300)
            # the second worker starts while the first trains: it sees all that follows
            second = _worker(pool, "worker-2", env, tmp_path / "worker-2.log")
            last = _last_checkpoint(project, first, timeout=420)
            pids = _kill_machine(first)
            finished = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
            assert 1 <= finished < EPOCHS, "the kill came after training had finished"
            assert not (last.parent / "meta.json").exists()
            assert client.read_flow_run(killed_run.id).state.type.value == "RUNNING"
            store = MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
            assert store.search_registered_models() == []  # nothing registered

            queued = run_deployment("retrain/scheduled", timeout=0)
            _wait_state(client, queued.id, {"AwaitingConcurrencySlot"}, timeout=300)
            (check,) = _wait_final(client, [run_deployment("evaluate-champions/weekly",
                                                           timeout=0).id], timeout=300)
            assert check.state_name == "Completed"
            crashed = client.read_flow_run(killed_run.id)
            (resumed,) = _wait_final(client, [queued.id], timeout=420)
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                worker.terminate()
                _stopped(worker)
        delete_deployments(prefect_server)
    output = (tmp_path / "worker-2.log").read_text()
    assert crashed.state.type.value == "CRASHED", crashed.state
    assert resumed.state_name == "Completed", output[-3000:]
    assert f"unet: resuming after epoch {finished} from {last}" in output, output[-3000:]
    epochs = [int(n) for n in re.findall(rf"^unet epoch (\d+)/{EPOCHS} ", output, re.MULTILINE)]
    assert epochs == list(range(finished + 1, EPOCHS + 1)), output[-3000:]

    cut, done = store.search_runs([store.get_experiment_by_name("visiongate").experiment_id],
                                  order_by=["attributes.start_time ASC"])
    assert cut.info.status == "FAILED" and done.info.status == "FINISHED"
    failure = cut.data.tags["visiongate.failure"]
    assert failure.startswith("orphaned: its process ")
    assert int(failure.split()[3]) in pids  # the killed flow-run process
    assert cut.data.tags["prefect.flow_run_id"] == str(killed_run.id)
    assert done.data.tags["prefect.flow_run_id"] == str(resumed.id)
    steps = [sorted(m.step for m in store.get_metric_history(r.info.run_id, "train_loss"))
             for r in (cut, done)]
    assert set(steps[0]) <= set(range(1, finished + 1))
    assert steps[1] == list(range(finished + 1, EPOCHS + 1))
    champion = store.get_model_version_by_alias("shapes-segment", "champion")
    assert str(champion.version) == "1" and champion.run_id == done.info.run_id
