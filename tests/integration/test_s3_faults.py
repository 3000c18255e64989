"""The S3 server stopping in the middle of a transfer: a TCP forwarder in front of moto's S3
server (tcp_cut.CuttingProxy; moto keeps its objects) resets every connection and stops
listening once part of the import's push, then of a worker's pull, has passed. Each stop is
one line naming the DVC remote; nothing half-written is on the remote, no output is checked
out in part, nothing is trained or registered; once the server is back, `dvc push` completes
the upload and the worker's rerun pulls and trains on exactly what the importing side
pinned."""

from __future__ import annotations

import copy
import hashlib
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import S3_BUCKET, TINY_PARAMS  # tests/integration/conftest.py
from conftest import add_dvc_remote, make_project, worker_clone
from flows.cli import main
from tcp_cut import DOWN, UP, CuttingProxy  # tests/integration/tcp_cut.py
from visiongate import stack
from visiongate.config import SynthConfig
from visiongate.datasets.prepare import tree_md5
from visiongate.datasets.synth import generate
from visiongate.versioning import split_md5s

pytestmark = [pytest.mark.integration, pytest.mark.server, pytest.mark.fault]


def _objects(project: Path) -> dict[str, int]:
    """DVC's cache of `project`: size by `xx/rest-of-md5[.dir]`, as its remote keys end."""
    cache = project / ".dvc/cache/files/md5"
    return {p.relative_to(cache).as_posix(): p.stat().st_size
            for p in cache.rglob("*") if p.is_file()}


def _on_remote(endpoint: str) -> dict[str, str]:
    """What the bucket holds under dvc/files/md5/, with the md5 of each object's bytes."""
    import boto3

    bucket, prefix = boto3.client("s3", endpoint_url=endpoint), "dvc/files/md5/"
    keys = [o["Key"] for o in bucket.list_objects_v2(Bucket=S3_BUCKET, Prefix=prefix)
            .get("Contents", [])]
    return {k.removeprefix(prefix): hashlib.md5(
        bucket.get_object(Bucket=S3_BUCKET, Key=k)["Body"].read()).hexdigest() for k in keys}


@pytest.fixture
def root_records():
    """The records that reach the root logger's handlers (where Prefect's console handler
    prints each, with its traceback)."""
    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    records, recorder = [], Recorder(logging.DEBUG)
    logging.getLogger().addHandler(recorder)
    yield records
    logging.getLogger().removeHandler(recorder)


def _one_line_error(capfd, root_records: list, in_flow: bool = False) -> tuple[str, str]:
    """(stdout, the last line of stderr: the one the user reads). DVC reports each file that
    failed on a line of its own; none of its records reaches the root logger, whose Prefect
    handler would print each with a traceback. Outside a flow run stderr holds no traceback
    (in one, Prefect's report of the failed run shows the DataError's)."""
    out, err = capfd.readouterr()
    dvc = [r for r in root_records if r.name.split(".")[0] in ("dvc", "dvc_data", "dvc_objects")]
    assert not dvc, [(r.name, r.getMessage()) for r in dvc[:3]]
    assert in_flow or "Traceback" not in err, err[-3000:]
    root_records.clear()
    return out, err.strip().splitlines()[-1]


def _whole_or_absent(clone: Path, project: Path) -> list[str]:
    """What a pull that failed left in `clone`: each pinned output is there whole (as on
    the importing side) or not at all, never in part; returns those there."""
    outs = ["data/raw/mine", *(f"data/prepared/mine/{name}" for name in (
        "train", "val", "test", "quarantine.csv", "info.json"))]
    there = [out for out in outs if (clone / out).exists()]
    for out in there:
        here, pinned = clone / out, project / out
        assert (tree_md5(here) == tree_md5(pinned) if pinned.is_dir()
                else here.read_bytes() == pinned.read_bytes()), out
    assert len(there) < len(outs)  # the pull did not finish
    return there


def test_s3_server_stopped_mid_push_and_mid_pull_fails_clearly_and_a_rerun_succeeds(
        tmp_path, s3, prefect_harness, capfd, root_records, monkeypatch):
    """Mid-push, then mid-pull: one line naming the remote each time, nothing half-done;
    a rerun once the server is back completes the push, then the pull and the retrain."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the server stays down: retrying only waits
    proxy = CuttingProxy(int(s3.rsplit(":", 1)[1]), stack.free_port())
    src = tmp_path / "export"
    generate(SynthConfig(seed=4, image_size=64, splits={"train": 8, "val": 4, "test": 4}), src)
    params = copy.deepcopy(TINY_PARAMS)
    params["detect"]["enabled"] = False  # the U-Net alone: the cheapest model that trains
    params["serve"] = {"export": []}
    project = add_dvc_remote(make_project(tmp_path / "importer", params), proxy.url)
    # the import's push uploads raw copy and prepared splits (about twice the source's bytes)
    proxy.arm(UP, sum(p.stat().st_size for p in src.rglob("*") if p.is_file()))
    try:
        assert main(["data", "import", "--format", "coco", str(src), "--name", "mine",
                     "--root", str(project)]) == 1
        out, last = _one_line_error(capfd, root_records)
        assert proxy.cut.is_set(), "the push finished before the server stopped"
        assert last.startswith("visiongate: error: the import is pinned here, but pushing it "
                               f"to DVC remote 'store' (s3://{S3_BUCKET}/dvc) failed: "), last
        assert "pushed to DVC remote" not in out
        cache, stored = _objects(project), _on_remote(s3)
        assert 0 < len(stored) < len(cache), (len(stored), len(cache))  # cut mid-push
        assert all(md5 == key.replace("/", "").removesuffix(".dir")
                   for key, md5 in stored.items())  # no half-written object
        proxy.reopen()  # the server is back, the remote holds part of the data
        partial = worker_clone(project, tmp_path / "partial")
        assert main(["retrain", "--dataset", "mine", "--root", str(partial)]) == 1
        _, last = _one_line_error(capfd, root_records, in_flow=True)
        assert last.startswith("visiongate: error: ") and "DVC remote 'store'" in last, last
        assert "did not finish" in last
        assert not (partial / ".cache/train").exists()  # nothing trained, nothing registered
        assert not list(partial.rglob("MLmodel"))
        _whole_or_absent(partial, project)  # splits complete on the remote may be checked out

        done = subprocess.run([sys.executable, "-m", "dvc", "push"], cwd=project,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert set(_on_remote(s3)) == set(cache)

        worker = worker_clone(project, tmp_path / "worker")
        proxy.arm(DOWN, sum(cache.values()) // 2)
        assert main(["retrain", "--dataset", "mine", "--root", str(worker)]) == 1
        _, last = _one_line_error(capfd, root_records, in_flow=True)
        assert proxy.cut.is_set(), "the pull finished before the server stopped"
        assert last.startswith("visiongate: error: data/prepared/mine is pinned in dvc.lock "
                               "but not here, and pulling it from DVC remote 'store' "), last
        assert "Nothing was trained." in last
        assert 0 < len(_objects(worker)) < len(cache)  # cut mid-pull
        _whole_or_absent(worker, project)
        assert not (worker / ".cache/train").exists()
        # still down (a closed port): `data validate` says so in one line, and pulls nothing
        assert main(["data", "validate", "mine", "--root", str(worker)]) == 1
        _, last = _one_line_error(capfd, root_records)
        assert last.startswith("visiongate: error: data/prepared/mine is pinned in dvc.lock "
                               "but not here, and pulling it from DVC remote 'store' "), last
        assert not list((worker / "data").glob("prepared/mine/*"))

        proxy.reopen()
        assert main(["retrain", "--dataset", "mine", "--root", str(worker)]) == 0
    finally:
        proxy.close()
    pinned = split_md5s(project, "mine")
    assert split_md5s(worker, "mine") == pinned
    assert (worker / "dvc.lock").read_bytes() == (project / "dvc.lock").read_bytes()
    client = MlflowClient(f"sqlite:///{worker}/mlruns/mlflow.db")
    champion = client.get_model_version_by_alias("mine-segment", "champion")
    assert str(champion.version) == "1"
    assert {split: champion.tags[f"data.md5.{split}"] for split in pinned} == pinned
