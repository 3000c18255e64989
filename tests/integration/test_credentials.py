"""Credentials given through the environment (MLflow basic auth, AWS keys) never reach
what a retrain stores: MLflow runs, experiments, registered versions, logged models,
artifact files and database, nor the Prefect flow run and its logs.

The scan is shown to work by finding known values (the test split's DVC md5, the project
path) in the same places where a secret would have to be absent."""

from __future__ import annotations

import base64
import secrets
import sqlite3
from pathlib import Path

import pytest
import yaml
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from conftest import TINY_PARAMS, make_project  # tests/integration/conftest.py
from flows.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.server]
SECRET_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "AWS_ACCESS_KEY_ID",
               "AWS_SECRET_ACCESS_KEY")


def _texts(*values) -> list[bytes]:
    return [str(v).encode() for v in values if v is not None]


def _dict(d: dict | None) -> list[bytes]:
    return _texts(*(d or {}).keys(), *(d or {}).values())


def _runs(client: MlflowClient) -> dict[str, list[bytes]]:
    experiments = client.search_experiments(view_type=ViewType.ALL)
    runs = client.search_runs([e.experiment_id for e in experiments], run_view_type=ViewType.ALL)
    assert runs, "no run to scan"
    return {
        "experiments": [t for e in experiments for t in _texts(e.name, e.artifact_location)
                        + _dict(e.tags)],
        "run params": [t for r in runs for t in _dict(r.data.params)],
        "run tags": [t for r in runs for t in _dict(r.data.tags)],
        "run metric keys": [t for r in runs for t in _texts(*r.data.metrics)],
        "run infos": [t for r in runs for t in _texts(r.info.run_name, r.info.user_id,
                                                      r.info.artifact_uri)],
        "logged models": [t for m in client.search_logged_models([e.experiment_id
                                                                   for e in experiments])
                          for t in _texts(m.name, m.source_run_id) + _dict(m.tags)
                          + _dict(m.params)],
    }


def _registry(client: MlflowClient) -> dict[str, list[bytes]]:
    models = client.search_registered_models()
    versions = [v for m in models for v in client.search_model_versions(f"name='{m.name}'")]
    assert versions, "no registered version to scan"
    return {
        "registered models": [t for m in models for t in _texts(m.name, m.description)
                              + _dict(m.tags) + _dict(m.aliases)],
        "model versions": [t for v in versions for t in _texts(v.description, v.source,
                                                                v.user_id) + _dict(v.tags)],
    }


def _stored_files(db: Path, artifacts: Path) -> dict[str, list[bytes]]:
    files = [p for p in artifacts.rglob("*") if p.is_file()]
    assert any(p.name == "MLmodel" for p in files) and any(
        p.name == "requirements.txt" for p in files), "the logged model's files are missing"
    with sqlite3.connect(db) as con:  # every row of every table, as text
        rows = [repr(row).encode() for (table,) in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")
            for row in con.execute(f'SELECT * FROM "{table}"')]
    return {"artifact files": [p.read_bytes() for p in files], "mlflow database rows": rows,
            "mlflow database file": [p.read_bytes() for p in db.parent.glob(db.name + "*")]}


def _prefect(project: Path) -> dict[str, list[bytes]]:
    """Parameters and logs of this project's retrain flow runs on the test harness's API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)  # logs travel to the API in batches
    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs() if r.parameters.get("root") == str(project)]
        assert runs, "no Prefect flow run of this project"
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[r.id for r in runs])))
    assert logs, "no Prefect log to scan"
    return {"prefect flow run parameters": [t for r in runs for t in _dict(r.parameters)],
            "prefect logs": _texts(*(log.message for log in logs))}


def _test_split_md5(project: Path) -> str:
    outs = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["synthesize"]["outs"]
    return next(o["md5"] for o in outs if o["path"].endswith("/test")).removesuffix(".dir")


def _where(needle: str, stored: dict[str, list[bytes]]) -> set[str]:
    return {place for place, blobs in stored.items()
            if any(needle.encode() in blob for blob in blobs)}


def test_credentials_in_the_environment_are_never_stored(tmp_path, mlflow_server,
                                                         prefect_harness, monkeypatch):
    db, artifacts = tmp_path / "mlflow.db", tmp_path / "artifacts"
    server = mlflow_server.start(f"sqlite:///{db}", artifacts)  # started without the secrets
    given = {var: f"{var.lower()}-{secrets.token_hex(16)}" for var in SECRET_VARS}
    for var, value in given.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    project = make_project(tmp_path / "project", TINY_PARAMS)

    assert main(["retrain", "--root", str(project)]) == 0

    client = MlflowClient(server.url)
    stored = {**_runs(client), **_registry(client), **_stored_files(db, artifacts),
              **_prefect(project)}
    basic_auth = base64.b64encode(f"{given['MLFLOW_TRACKING_USERNAME']}:"
                                  f"{given['MLFLOW_TRACKING_PASSWORD']}".encode()).decode()
    for name, value in {**given, "basic-auth header": basic_auth}.items():
        assert _where(value, stored) == set(), f"{name} was stored"

    # The scan sees what is there: the test split's md5 in every MLflow place that lineage
    # reaches, the project path in Prefect's parameters, the outcome in its logs.
    assert _where(_test_split_md5(project), stored) >= {"run params", "run tags", "model versions",
                                        "artifact files", "mlflow database rows",
                                        "mlflow database file"}
    assert _where(str(project), stored) >= {"prefect flow run parameters"}
    assert _where("v1: promoted to champion", stored) >= {"prefect logs"}
