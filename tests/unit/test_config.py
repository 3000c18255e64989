from pathlib import Path

import pytest
from pydantic import ValidationError

from visiongate.config import Params, flatten, load_params, params_hash

REPO = Path(__file__).resolve().parents[2]


def test_repo_params_validate():
    params = load_params(REPO / "params.yaml")
    assert list(params.model_tasks()) == ["detect", "segment"]
    assert params.detect.family == "yolo" and params.segment.family == "unet"


def test_unknown_key_is_an_error_naming_it(tmp_path):
    (tmp_path / "params.yaml").write_text("detect:\n  epochz: 3\n")
    with pytest.raises(ValidationError, match="epochz"):
        load_params(tmp_path / "params.yaml")


def test_unknown_shape_class_names_the_choices():
    with pytest.raises(ValidationError, match="hexagon.*choose from"):
        Params.model_validate({"synth": {"classes": ["circle", "hexagon"]}})


def test_disabled_task_is_skipped():
    params = Params.model_validate({"segment": {"enabled": False}})
    assert list(params.model_tasks()) == ["detect"]


def test_flatten_and_hash_are_stable():
    params = Params()
    flat = flatten(params.detect, "detect.")
    assert flat["detect.epochs"] == str(params.detect.epochs)
    assert flat["detect.gate.floors.map50"] == "0.5"
    assert params_hash(params.detect) == params_hash(Params().detect)
    assert params_hash(params.detect) != params_hash(params.detect.model_copy(update={"epochs": 1}))


def test_missing_params_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no params file"):
        load_params(tmp_path / "nope.yaml")
