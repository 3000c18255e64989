"""Faults lose nothing: corrupted data is caught before training, and retrains of one
dataset never overlap. Each test checks the data and registry state afterwards."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from flows.cli import BUSY, main
from visiongate.config import load_params
from visiongate.tracking import tracking_uri
from visiongate.versioning import reproduce

pytestmark = [pytest.mark.integration, pytest.mark.fault]


def _first_image(project: Path) -> Path:
    return sorted((project / "data/prepared/shapes/test/images").glob("*.png"))[0]


def _flip_byte(path: Path, keep_mtime: bool = False) -> None:
    stat = path.stat()
    os.chmod(path, 0o644)                       # DVC cache objects are read-only
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    if keep_mtime:                              # what bit rot looks like to DVC's state db
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _nothing_trained(project: Path) -> None:
    assert not (project / ".cache" / "train").exists()
    db = project / "mlruns" / "mlflow.db"
    if db.exists():
        client = MlflowClient(tracking_uri(project, load_params(project / "params.yaml").mlflow))
        assert client.search_registered_models() == []


@pytest.mark.parametrize("where", ["workspace", "dvc-cache"])
def test_corrupted_data_file_stops_the_flow_before_training(tiny_project, prefect_harness,
                                                            capsys, where):
    md5s = reproduce(tiny_project, "shapes")
    image = _first_image(tiny_project)
    if where == "workspace":
        target = image
    else:
        import hashlib

        digest = hashlib.md5(image.read_bytes()).hexdigest()
        target = tiny_project / ".dvc/cache/files/md5" / digest[:2] / digest[2:]
    _flip_byte(target, keep_mtime=True)

    assert main(["retrain", "--root", str(tiny_project)]) == 1
    err = capsys.readouterr().err
    assert "differ from what dvc.lock pins" in err and image.name in err
    assert "DVC cache" in err if where == "dvc-cache" else "(workspace)" in err
    _nothing_trained(tiny_project)
    assert yaml.safe_load((tiny_project / "dvc.lock").read_text())  # pins untouched
    assert reproduce(tiny_project, "shapes") == md5s


def test_a_second_retrain_of_the_same_dataset_exits_clearly(tiny_project, prefect_harness, capsys):
    from filelock import FileLock

    lock = FileLock(tiny_project / ".cache" / "locks" / "retrain-shapes.lock")
    with lock:                                  # a retrain in another process holds it
        assert main(["retrain", "--root", str(tiny_project)]) == BUSY
    err = capsys.readouterr().err
    assert "another retrain of dataset 'shapes' is running" in err
    _nothing_trained(tiny_project)
    assert not (tiny_project / "data" / "prepared" / "shapes").exists()  # not even DVC ran


def _shared_prefect(api: str) -> dict:
    """Two cron-started shells reporting to the team's Prefect server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**env, "PREFECT_API_URL": api}


def test_two_retrains_started_at_once_one_runs_one_exits(tiny_project, prefect_server):
    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    params["segment"]["enabled"] = False
    (tiny_project / "params.yaml").write_text(yaml.safe_dump(params))
    command = [sys.executable, "-m", "flows.cli", "retrain", "--root", str(tiny_project)]
    runs = [subprocess.Popen(command, env=_shared_prefect(prefect_server),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[2]) for k in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, BUSY], results
    assert "is running" in next(err for code, err in results if code == BUSY)
    client = MlflowClient(tracking_uri(tiny_project, load_params(tiny_project / "params.yaml").mlflow))
    versions = client.search_model_versions("name='shapes-detect'")
    assert len(versions) == 1
    assert str(client.get_model_version_by_alias("shapes-detect", "champion").version) == \
        str(versions[0].version)


def test_truncated_checkpoint_is_a_clear_error_and_promotes_nothing(tiny_project, prefect_harness,
                                                                    monkeypatch, capsys):
    from visiongate.models import unet

    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    params["detect"]["enabled"] = False
    (tiny_project / "params.yaml").write_text(yaml.safe_dump(params))
    real_train = unet.train

    def train_then_truncate(*args, **kwargs):  # a disk that filled up while saving
        checkpoint = real_train(*args, **kwargs)
        weights = checkpoint / json.loads((checkpoint / "meta.json").read_text())["weights"]
        weights.write_bytes(weights.read_bytes()[:1000])
        return checkpoint

    monkeypatch.setattr(unet, "train", train_then_truncate)
    assert main(["retrain", "--root", str(tiny_project)]) == 1
    assert "cannot be loaded — truncated or corrupted?" in capsys.readouterr().err
    client = MlflowClient(tracking_uri(tiny_project, load_params(tiny_project / "params.yaml").mlflow))
    assert client.search_registered_models() == []
    (run,) = client.search_runs([client.get_experiment_by_name("visiongate").experiment_id])
    assert run.info.status == "FAILED"
