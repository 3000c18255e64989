"""Scale-out, local variant: an `mlflow server` backed by a real PostgreSQL (the Debian
package, started on loopback by the test) with proxied artifacts, used by a tiny retrain.

The retrain talks to the server over HTTP only (MLFLOW_TRACKING_URI); the test then reads
the registry through the server, the rows straight from PostgreSQL, the artifacts from the
server's artifacts destination on disk, and loads the champion by alias as a pyfunc.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY_PARAMS, make_project  # tests/integration/conftest.py
from pg_cluster import PG_USER  # tests/integration/pg_cluster.py
from visiongate import serving
from visiongate.versioning import split_md5s

pytestmark = [pytest.mark.integration]

DETECT = "shapes-detect"


def _query(port: int, sql: str, args: tuple = ()) -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=port, user=PG_USER, dbname="mlflow")
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def test_retrain_against_postgres_backed_mlflow_server(postgres, mlflow_server, tmp_path,
                                                       prefect_harness, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from flows.cli import main

    artifacts = tmp_path / "artifacts"
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the installed driver is psycopg2
    server = mlflow_server.start(f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{postgres}/mlflow",
                                 artifacts)
    params = {**TINY_PARAMS, "segment": {**TINY_PARAMS["segment"], "enabled": False}}
    project = make_project(tmp_path / "project", params)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)

    assert main(["retrain", "--root", str(project)]) == 0

    client = MlflowClient(server.url)
    champion = client.get_model_version_by_alias(DETECT, "champion")
    assert str(champion.version) == "1"
    assert set(champion.aliases) == {"champion", "challenger"}
    pinned = split_md5s(project, "shapes")
    assert champion.tags["data.md5.train"] == pinned["train"]
    assert champion.tags["data.md5.test"] == pinned["test"]
    assert champion.tags["gate.passed"] == "true"
    run = client.get_run(champion.run_id)
    assert run.info.status == "FINISHED"
    assert "test/map50" in run.data.metrics
    assert run.data.params["data.md5.train"] == pinned["train"]
    # proxied artifacts: the experiment's location is the server's, not a local path
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")

    _assert_rows_in_postgres(postgres, champion.run_id, pinned["train"])
    _assert_artifacts_on_disk(client, artifacts, champion, tmp_path / "downloaded")
    # nothing went to the project's default sqlite store
    assert not list(project.rglob("*.db")), list(project.rglob("*.db"))

    image = sorted((project / "data/prepared/shapes/test/images").glob("*.png"))[0]
    model = mlflow.pyfunc.load_model(f"models:/{DETECT}@champion")
    (answer,) = model.predict(pd.DataFrame({"image": [serving.encode_image(image)]}),
                              params={"min_score": 0.0})
    assert (answer["width"], answer["height"]) == (64, 64)
    assert isinstance(answer["detections"], list) and "error" not in answer
    assert model.metadata.metadata["family"] == "yolo"


def _assert_rows_in_postgres(port: int, run_id: str, train_md5: str) -> None:
    """The registry and the run are rows of PostgreSQL's MLflow schema."""
    assert _query(port, "SELECT name FROM registered_models") == [(DETECT,)]
    assert _query(port, "SELECT name, version, run_id FROM model_versions") == [
        (DETECT, 1, run_id)]
    aliases = _query(port, "SELECT alias, version FROM registered_model_aliases "
                           "WHERE name = %s ORDER BY alias", (DETECT,))
    assert aliases == [("challenger", 1), ("champion", 1)]
    tags = dict(_query(port, "SELECT key, value FROM model_version_tags WHERE name = %s",
                       (DETECT,)))
    assert tags["gate.passed"] == "true" and tags["data.md5.train"] == train_md5
    metrics = {k for (k,) in _query(port, "SELECT key FROM latest_metrics WHERE run_uuid = %s",
                                    (run_id,))}
    assert "test/map50" in metrics
    (status,) = _query(port, "SELECT status FROM runs WHERE run_uuid = %s", (run_id,))
    assert status == ("FINISHED",)


def _assert_artifacts_on_disk(client, artifacts: Path, version, download_to: Path) -> None:
    """The server stored the run's files and the logged model under its destination, and
    serves those very bytes."""
    (report,) = [p for p in artifacts.rglob("gate_report.md") if version.run_id in p.parts]
    assert DETECT in report.read_text()
    download_to.mkdir()
    served = client.download_artifacts(version.run_id, "gate_report.md", str(download_to))
    assert Path(served).read_bytes() == report.read_bytes()
    model_id = version.source.removeprefix("models:/")  # REST leaves version.model_id unset
    assert model_id.startswith("m-"), version.source
    (mlmodel,) = [p for p in artifacts.rglob("MLmodel") if model_id in p.parts]
    assert list(mlmodel.parent.rglob("meta.json")), f"no checkpoint beside {mlmodel}"
