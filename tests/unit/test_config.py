from pathlib import Path

import pytest
from pydantic import ValidationError

from visiongate.config import Params, load_params
from visiongate.errors import ConfigError, NotFound
from visiongate.lineage import flatten, params_hash

REPO = Path(__file__).resolve().parents[2]


def test_repo_params_validate():
    params = load_params(REPO / "params.yaml")
    assert list(params.model_tasks()) == ["detect", "segment", "classify"]
    assert params.detect.family == "yolo" and params.segment.family == "unet"
    assert (params.classify.family, params.classify.view) == ("resnet18", "crops")


def test_unknown_key_is_an_error_naming_it(tmp_path):
    (tmp_path / "params.yaml").write_text("detect:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match="params.yaml: detect.epochz: Extra inputs"):
        load_params(tmp_path / "params.yaml")


def test_errors_are_one_line_naming_the_file_and_fields(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("detect:\n  epochs: 0\nsegment:\n  device: gpu\n")
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert str(err.value) == (
        f"{path}: detect.epochs: Input should be greater than or equal to 1; "
        "segment.device: device 'gpu' is not a device spec; choose from auto | cpu | mps | "
        "cuda | cuda:N | N | N,M,... (CUDA indices)")
    path.write_text("detect: [epochs: 3\n")
    with pytest.raises(ConfigError, match=r"params.yaml: not valid YAML at line \d+") as err:
        load_params(path)
    assert "\n" not in str(err.value)


def test_deep_load_rejects_a_bad_augmentation(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("segment:\n  augment: [{name: HorizontalFlop}]\n")
    assert load_params(path).segment.augment == [{"name": "HorizontalFlop"}]  # shallow
    with pytest.raises(ConfigError, match=r"params.yaml: segment.augment\[0\]: .*HorizontalFlop"):
        load_params(path, deep=True)


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
    with pytest.raises(NotFound, match="no params file"):  # a FileNotFoundError
        load_params(tmp_path / "nope.yaml")
