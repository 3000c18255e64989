"""A shared data remote and MLflow artifacts on S3: a real S3 API (moto's server mode, a
separate process on a free loopback port), DVC's own S3 remote, an `mlflow server` on a
real PostgreSQL (Debian's package, started on loopback) with `--artifacts-destination
s3://…`. Credentials live only in the environment.

The importing side pushes; a worker clone (project files without data or DVC cache) pulls,
retrains through the tracking server, and its registered version's lineage equals the
importing side's dvc.lock; a third process loads the champion by alias. The S3 server
stopping in the middle of a push or a pull: test_s3_faults.py."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (PG_USER, S3_BUCKET as BUCKET, S3_SECRET as SECRET,  # tests/integration/
                      TINY_PARAMS, add_dvc_remote, make_project, worker_clone)
from flows.cli import main
from visiongate.config import SynthConfig
from visiongate.datasets.synth import generate
from visiongate.versioning import split_md5s

pytestmark = [pytest.mark.integration, pytest.mark.server]
DETECT = "mine-detect"


def _project(root: Path, endpoint: str) -> Path:
    params = copy.deepcopy(TINY_PARAMS)
    params["segment"]["enabled"] = False
    params["detect"]["gate"].pop("robustness")
    project = make_project(root, params)
    return add_dvc_remote(project, endpoint)


def _query(port: int, sql: str, args: tuple = ()) -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=port, user=PG_USER, dbname="mlflow")
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


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


def test_push_pull_retrain_on_a_worker_with_mlflow_artifacts_on_s3(
        tmp_path, s3, postgres, mlflow_server, prefect_harness, monkeypatch, capsys):
    import boto3
    from mlflow.tracking import MlflowClient

    src = tmp_path / "export"
    generate(SynthConfig(seed=3, image_size=64, splits={"train": 8, "val": 4, "test": 4}), src)
    project = _project(tmp_path / "importer", s3)
    assert main(["data", "import", "--format", "coco", str(src), "--name", "mine",
                 "--root", str(project)]) == 0
    assert "pushed to DVC remote 'store'" in capsys.readouterr().out
    bucket = boto3.client("s3", endpoint_url=s3)
    pushed = [o["Key"] for o in bucket.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert pushed and all(k.startswith("dvc/") for k in pushed)

    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3)  # the tracking server's, not the worker's
    server = mlflow_server.start(f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{postgres}/mlflow",
                                 f"s3://{BUCKET}/mlflow")
    worker = worker_clone(project, tmp_path / "worker")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    assert main(["retrain", "--dataset", "mine", "--root", str(worker)]) == 0
    assert split_md5s(worker, "mine") == split_md5s(project, "mine")
    assert (worker / "dvc.lock").read_bytes() == (project / "dvc.lock").read_bytes()

    client = MlflowClient(server.url)
    champion = client.get_model_version_by_alias(DETECT, "champion")
    pinned = split_md5s(project, "mine")
    for split, md5 in pinned.items():
        assert champion.tags[f"data.md5.{split}"] == md5
    assert set(champion.aliases) == {"champion", "challenger"}
    assert client.get_run(champion.run_id).info.status == "FINISHED"
    # the registry and the run are rows of PostgreSQL; nothing went to a local sqlite store
    _assert_rows_in_postgres(postgres, champion.run_id, pinned["train"])
    assert not list(worker.rglob("*.db")), list(worker.rglob("*.db"))
    experiment = client.get_experiment(client.get_run(champion.run_id).info.experiment_id)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied
    stored = [o["Key"] for o in bucket.list_objects_v2(Bucket=BUCKET, Prefix="mlflow/")
              .get("Contents", [])]
    assert any(k.endswith("/MLmodel") for k in stored)
    assert any(k.endswith("gate_report.md") for k in stored)
    run = client.get_run(champion.run_id)
    assert SECRET not in repr(run.data.params) + repr(run.data.tags)
    assert SECRET not in (project / ".dvc/config").read_text()

    # a third process, with the tracking URI only (no S3 credentials: artifacts are proxied)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_S3"))}
    image = sorted((worker / "data/prepared/mine/test/images").glob("*.png"))[0]
    loaded = subprocess.run([sys.executable, "-c", (
        "import sys, mlflow, pandas as pd; from visiongate import serving; "
        "m = mlflow.pyfunc.load_model('models:/mine-detect@champion'); "
        "(a,) = m.predict(pd.DataFrame({'image': [serving.encode_image(sys.argv[1])]}), "
        "params={'min_score': 0.0}); "
        "print(m.metadata.metadata['family'], a['width'], a['height'], 'error' in a)"),
        str(image)], env=env, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.split()[-4:] == ["yolo", "64", "64", "False"], loaded.stdout[-500:]
