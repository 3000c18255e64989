"""The CLI's error contract: a `VisiongateError` is the user's to fix and gets one line
(exit 1; `RetrainBusy` exit 4); any other exception is a bug and keeps its traceback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

import flows.retrain
from flows.cli import main
from visiongate import metrics, tracking
from visiongate.config import MlflowConfig
from visiongate.errors import (ConfigError, DataError, ModelError, NotFound, RegistryError,
                               RetrainBusy, VisiongateError)


@pytest.fixture(autouse=True)
def local_store(monkeypatch):
    """Each test reads the MLflow store of its own --root, never a server from the env."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _one_line_error(code: int, capsys) -> str:
    err = capsys.readouterr().err
    assert code == 1, err
    assert len(err.splitlines()) == 1 and err.startswith("visiongate: error: "), err
    return err


def test_each_kind_is_also_the_builtin_it_replaces():
    for kind, builtin in ((ConfigError, ValueError), (DataError, ValueError),
                          (ModelError, ValueError), (RegistryError, ValueError),
                          (NotFound, FileNotFoundError), (RetrainBusy, RuntimeError)):
        assert issubclass(kind, VisiongateError) and issubclass(kind, builtin)


def _torch_shape_bug(*args, **kwargs):
    return torch.nn.Linear(3, 4)(torch.zeros(2, 5))  # mat1 and mat2 shapes cannot be multiplied


def _numpy_bug(*args, **kwargs):
    return np.zeros(3).reshape(2, 2)  # cannot reshape array of size 3


def _missing_internal_file(*args, **kwargs):
    return open("/nonexistent/visiongate-internal.json")


@pytest.mark.parametrize("bug, kind", [(_torch_shape_bug, RuntimeError),
                                       (_numpy_bug, ValueError),
                                       (_missing_internal_file, FileNotFoundError)])
def test_a_library_bug_reaches_the_user_with_its_traceback(bug, kind, monkeypatch, tmp_path):
    monkeypatch.setattr(metrics, "evaluate_coco_files", bug)
    with pytest.raises(kind) as raised:
        main(["evaluate-coco", str(tmp_path / "gt.json"), str(tmp_path / "pred.json")])
    assert not isinstance(raised.value, VisiongateError)


def test_a_missing_or_broken_file_the_user_named_is_one_line(tmp_path, capsys):
    err = _one_line_error(main(["evaluate-coco", str(tmp_path / "gt.json"),
                                str(tmp_path / "pred.json")]), capsys)
    assert "gt.json: no such file" in err
    (tmp_path / "gt.json").write_text("{not json")
    err = _one_line_error(main(["evaluate-coco", str(tmp_path / "gt.json"),
                                str(tmp_path / "pred.json")]), capsys)
    assert "not a readable JSON file" in err


def test_an_invalid_params_file_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "params.yaml").write_text("detect: {epochs: 0}\n")
    # The flow's own function, without Prefect's engine (whose temporary API server takes
    # half a minute to start): the params are read before anything Prefect adds.
    monkeypatch.setattr(flows.retrain, "retrain", flows.retrain.retrain.fn)
    err = _one_line_error(main(["retrain", "--root", str(tmp_path)]), capsys)
    assert "detect.epochs" in err
    err = _one_line_error(main(["evaluate", "--model", "models:/shapes-detect@champion",
                                "--root", str(tmp_path)]), capsys)
    assert "detect.epochs" in err


def test_a_missing_params_file_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(flows.retrain, "retrain", flows.retrain.retrain.fn)
    err = _one_line_error(main(["retrain", "--root", str(tmp_path / "nowhere")]), capsys)
    assert "no params file" in err


def test_a_root_that_is_no_dvc_project_is_one_line(tmp_path, capsys):
    err = _one_line_error(main(["data", "validate", "shapes", "--root", str(tmp_path)]), capsys)
    assert "is not a DVC project" in err


def test_a_busy_retrain_exits_4(tmp_path, capsys, monkeypatch):
    def busy(*args, **kwargs):
        raise RetrainBusy("another retrain of dataset 'shapes' is running")

    monkeypatch.setattr(flows.retrain, "retrain", busy)
    assert main(["retrain", "--root", str(tmp_path)]) == 4
    assert capsys.readouterr().err.startswith("visiongate: busy: another retrain")


def test_an_unknown_model_is_one_line(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text("dataset: shapes\n")
    # an empty sqlite store under tmp_path (MLflow logs its creation: not ours to test)
    MlflowClient(tracking.tracking_uri(tmp_path, MlflowConfig())).search_registered_models()
    capsys.readouterr()
    root = ["--root", str(tmp_path)]
    for model, says in (("shapes-detect", "expected models:/NAME@ALIAS"),
                        ("models:/nope@champion", "no version of 'nope' has alias"),
                        ("models:/nope/3", "no version 3 of registered model 'nope'")):
        err = _one_line_error(main(["evaluate", "--model", model, *root]), capsys)
        assert says in err
    err = _one_line_error(main(["models", "list", "--name", "nope", *root]), capsys)
    assert "no registered model 'nope'" in err


def test_usage_errors_stay_exit_2(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["evaluate"])  # --model is required
    assert raised.value.code == 2
    assert "--model" in capsys.readouterr().err
