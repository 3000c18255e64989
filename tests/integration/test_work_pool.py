"""Work pools instead of `serve`: `visiongate deploy --pool` registers the deployments with a
real `prefect server` (loopback), two real `prefect worker start --pool` processes run them,
and the retrain deployment's concurrency limit of 1 makes a second run wait for the first."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import TINY_PARAMS, make_project  # tests/integration/conftest.py

pytestmark = [pytest.mark.integration, pytest.mark.server]
BIN = Path(sys.executable).parent


def _env(api: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_TRACKING_URI"))}
    return {**env, "PREFECT_API_URL": api, "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}


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
    pool, env = f"pool-{uuid.uuid4().hex[:8]}", _env(prefect_server)
    deployed = subprocess.run([str(BIN / "visiongate"), "deploy", "--pool", pool, "--root",
                               str(project)], env=env, capture_output=True, text=True, timeout=120)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    assert "retrain/scheduled" in deployed.stdout and f"--pool {pool}" in deployed.stdout

    logs = [open(tmp_path / f"worker-{i}.log", "w") for i in (1, 2)]
    workers = [subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", pool,
                                 "--name", f"worker-{i}"], env=env, cwd=tmp_path,
                                stdout=log, stderr=subprocess.STDOUT)
               for i, log in zip((1, 2), logs)]
    try:
        with temporary_settings({PREFECT_API_URL: prefect_server}), \
                get_client(sync_client=True) as client:
            started = [run_deployment("retrain/scheduled", timeout=0) for _ in range(2)]
            runs = _wait_final(client, [r.id for r in started], timeout=420)
            histories = [[s.name for s in client.read_flow_run_states(r.id)] for r in runs]
    finally:
        for worker in workers:
            worker.terminate()
        for worker, log in zip(workers, logs):
            worker.wait(timeout=60)
            log.close()
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
