"""`visiongate serve` on a real `prefect server start`: the deployments register, runs
triggered through the API complete, a rerun with nothing changed trains nothing, and a
change of the dataset's DVC md5 makes the data watcher start a retrain."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import TINY_PARAMS, delete_deployments, make_project  # tests/integration/conftest.py

pytestmark = [pytest.mark.integration, pytest.mark.server]

# U-Net only: the model is the cheap part here; what is tested is scheduling.
PARAMS = {**TINY_PARAMS, "detect": {"enabled": False},
          "schedule": {"retrain_cron": "0 2 * * *", "data_poll_minutes": 60}}
NAME = "shapes-segment"


@pytest.fixture
def served(tmp_path, prefect_server, monkeypatch):
    """A tiny project whose deployments `visiongate serve` runs against the real server,
    after the same names were registered with a work pool (`visiongate deploy --pool`):
    serve must replace them, or every served run crashes."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.schedule import deploy_to_pool

    project = make_project(tmp_path / "project", PARAMS)
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        deploy_to_pool(project, "left-behind")
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--root", str(project)],
                            cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        _wait_for_deployments(proc, tmp_path / "serve.log")
        assert "replaced deployment retrain/scheduled (was registered for work pool " \
               "'left-behind')" in (tmp_path / "serve.log").read_text()
        yield project
    os.killpg(proc.pid, 15)
    proc.wait(timeout=60)
    log.close()
    delete_deployments(prefect_server)


def _wait_for_deployments(proc, log: Path, timeout: float = 180) -> None:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"visiongate serve exited:\n{log.read_text()[-3000:]}"
            names = {d.name for d in client.read_deployments() if d.work_pool_name is None}
            if {"scheduled", "weekly", "on-demand", "poll"} <= names:
                return
            time.sleep(1)
    raise AssertionError(f"deployments not registered in {timeout} s:\n{log.read_text()[-3000:]}")


def _run(name: str, timeout: float = 300):
    from prefect.deployments import run_deployment

    run = run_deployment(name, timeout=timeout, poll_interval=1, as_subflow=False)
    assert run.state.is_completed(), f"{name}: {run.state.type} {run.state.message}"
    return run


def _logged(run_id, text: str, timeout: float = 60) -> bool:
    """Whether the flow run's logs on the server contain `text`. The runner ships logs in
    batches after the run's state is final, so wait for them a while."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            if any(text in entry.message for entry in logs):
                return True
            if time.monotonic() > deadline:
                print("\n".join(entry.message for entry in logs))
                return False
            time.sleep(1)


def _versions(project: Path) -> dict[str, dict]:
    client = MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    found = [client.get_model_version(NAME, v.version)  # search results carry no aliases
             for v in client.search_model_versions(f"name='{NAME}'")]
    return {str(v.version): {"tags": v.tags, "aliases": v.aliases} for v in found}


def test_served_deployments_retrain_skip_and_follow_the_data(served):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterKey,
                                                DeploymentFilter, DeploymentFilterName)

    project = served
    first = _run("retrain/scheduled")
    versions = _versions(project)
    assert list(versions) == ["1"] and "champion" in versions["1"]["aliases"]
    with get_client(sync_client=True) as client:  # (other tests' runs share the server)
        published = {key: [a for a in client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]))) if a.flow_run_id == first.id]
            for key in (f"gate-report-{NAME}", f"metrics-{NAME}")}
        assert all(published.values()), published
        assert "miou" in str(published[f"metrics-{NAME}"][0].data)

    # nothing changed: the run completes, says so, and registers nothing
    again = _run("retrain/scheduled")
    assert _logged(again.id, "nothing changed since v1")
    assert list(_versions(project)) == ["1"]

    # the data changes (the generator's seed is a DVC param): the watcher starts a retrain
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["synth"]["seed"] = 7
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    watch = _run("watch-data/poll")
    assert _logged(watch.id, "started retrain run")
    with get_client(sync_client=True) as client:
        deployment = client.read_deployments(deployment_filter=DeploymentFilter(
            name=DeploymentFilterName(any_=["scheduled"])))[0]
        runs = client.read_flow_runs()
        started = [r for r in runs if r.deployment_id == deployment.id
                   and r.id not in (first.id, again.id)]
        assert len(started) == 1
        deadline = time.monotonic() + 300
        while not client.read_flow_run(started[0].id).state.is_final():
            assert time.monotonic() < deadline, "the watcher's retrain did not finish"
            time.sleep(2)
        assert client.read_flow_run(started[0].id).state.is_completed()
    versions = _versions(project)
    assert sorted(versions) == ["1", "2"] and "champion" in versions["2"]["aliases"]
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    pinned = {o["path"]: o["md5"] for o in lock["stages"]["synthesize"]["outs"]}
    assert versions["2"]["tags"]["data.md5.train"] == \
        pinned["data/prepared/shapes/train"].removesuffix(".dir")
    assert versions["2"]["tags"]["data.md5.train"] != versions["1"]["tags"]["data.md5.train"]

    # the weekly check re-scores the champion and logs an MLflow run for it
    _run("evaluate-champions/weekly")
    client = MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs(client.get_experiment_by_name("visiongate").experiment_id,
                              "tags.kind = 'evaluation'")
    assert [r.info.run_name for r in runs] == [f"evaluate {NAME} v2"]
    assert "test/miou" in runs[0].data.metrics
