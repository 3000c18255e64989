"""A shared data remote and MLflow artifacts on S3: a real S3 API (moto's server mode, a
separate process on a free loopback port), DVC's own S3 remote, an `mlflow server` on a
real PostgreSQL (Debian's package, started on loopback) with `--artifacts-destination
s3://…`. Credentials live only in the environment.

The importing side pushes; a worker clone (project files without data or DVC cache) pulls,
retrains through the tracking server, and its registered version's lineage equals the
importing side's dvc.lock; a third process loads the champion by alias. A remote that
lacks a pinned file (a push that did not finish) or cannot be reached stops the retrain
before training, naming the remote, with nothing registered."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import PG_USER, TINY_PARAMS, make_project  # tests/integration/conftest.py
from flows.cli import main
from visiongate import stack
from visiongate.config import SynthConfig
from visiongate.errors import DataError
from visiongate.datasets.synth import generate
from visiongate.versioning import push, split_md5s

pytestmark = [pytest.mark.integration, pytest.mark.server]
BUCKET, SECRET = "visiongate-data", "moto-secret-key-not-for-logs"
DETECT = "mine-detect"


@pytest.fixture
def s3(monkeypatch, tmp_path):
    """moto's S3 server on a free loopback port with an empty bucket; yields its endpoint.
    The credentials (any value: moto checks none) are set in the environment only."""
    import boto3

    for key, value in {"AWS_ACCESS_KEY_ID": "moto-key", "AWS_SECRET_ACCESS_KEY": SECRET,
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    port = stack.free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "moto.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "moto did not start"
                time.sleep(0.2)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _project(root: Path, endpoint: str, remote: bool = True) -> Path:
    params = copy.deepcopy(TINY_PARAMS)
    params["segment"]["enabled"] = False
    params["detect"]["gate"].pop("robustness")
    project = make_project(root, params)
    return _add_remote(project, endpoint) if remote else project


def _add_remote(project: Path, endpoint: str) -> Path:
    for cmd in (["remote", "add", "-d", "store", f"s3://{BUCKET}/dvc"],
                ["remote", "modify", "store", "endpointurl", endpoint]):
        subprocess.run([sys.executable, "-m", "dvc", *cmd], cwd=project, check=True,
                       capture_output=True)
    return project


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


def _worker_clone(project: Path, root: Path, endpoint: str | None = None) -> Path:
    """What a worker gets from version control: the project files, no data, no DVC cache."""
    root.mkdir()
    for name in ("dvc.yaml", "dvc.lock", "params.yaml"):
        shutil.copy(project / name, root / name)
    (root / "data/raw").mkdir(parents=True)
    shutil.copy(project / "data/raw/mine.dvc", root / "data/raw/mine.dvc")
    (root / ".dvc").mkdir()
    config = (project / ".dvc/config").read_text()
    if endpoint:
        config = config.replace(config.split("endpointurl = ")[1].split()[0], endpoint)
    (root / ".dvc/config").write_text(config)
    (root / "visiongate").symlink_to(Path(project / "visiongate").resolve(),
                                     target_is_directory=True)
    return root


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
    worker = _worker_clone(project, tmp_path / "worker")
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


def test_a_partial_push_or_an_unreachable_remote_stops_before_training(
        tmp_path, s3, prefect_harness, capsys, monkeypatch):
    src = tmp_path / "export"
    generate(SynthConfig(seed=4, image_size=64, splits={"train": 8, "val": 4, "test": 4}), src)
    project = _project(tmp_path / "importer", s3, remote=False)
    assert main(["data", "import", "--format", "coco", str(src), "--name", "mine",
                 "--root", str(project)]) == 0
    _add_remote(project, s3)
    # a push that did not finish: one file of the cache was not uploaded
    cache = sorted(p for p in (project / ".dvc/cache").rglob("*")
                   if p.is_file() and not p.name.endswith(".dir"))
    held_back = cache[len(cache) // 2]
    held_back.rename(held_back.with_name(held_back.name + ".aside"))
    try:
        push(project, "mine")
    except DataError:
        pass  # DVC may report the missing file; the upload of the rest went through
    held_back.with_name(held_back.name + ".aside").rename(held_back)
    capsys.readouterr()

    partial = _worker_clone(project, tmp_path / "partial")
    assert main(["retrain", "--dataset", "mine", "--root", str(partial)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # the one line the user reads
    assert last.startswith("visiongate: error: ") and "DVC remote 'store'" in last
    assert "failed: " in last and "did not finish" in last
    assert not list(partial.rglob("MLmodel"))  # nothing registered

    closed = stack.free_port()  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the same error without botocore's backoff
    unreachable = _worker_clone(project, tmp_path / "unreachable", f"http://127.0.0.1:{closed}")
    assert main(["data", "validate", "mine", "--root", str(unreachable)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("visiongate: error: ") and "DVC remote 'store'" in last, last
    assert not (unreachable / "data/prepared/mine/train").exists()

    # the importing side pushes again (`dvc push`): the same clone now pulls the pinned data
    assert push(project, "mine") == ("store", 1)
    assert main(["data", "validate", "mine", "--root", str(partial)]) == 0
    assert split_md5s(partial, "mine") == split_md5s(project, "mine")
    assert (partial / "dvc.lock").read_bytes() == (project / "dvc.lock").read_bytes()
