"""Loading a registered version never executes code (issue #20): a version whose artifacts
were tampered with in the store (a malicious best.pt, an MLmodel naming another loader
module, code paths, a pickled python_model, another data path or flavor, a symlink) is
refused before MLflow or ultralytics reads it.

conftest.yolo_store registers one tiny real YOLO in an MLflow sqlite store under tmp; a
test that tampers with the store restores it. Every test asserts the payload's marker file
never appears (hostile_models).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml
from hostile_models import NAME, craft, evil_loader, tampered

from visiongate import mlmodel, models, registry
from visiongate.errors import ModelError, RegistryError

pytestmark = pytest.mark.usefixtures("nothing_written_outside")


def _with_flavor(mlmodel_text: str, **changes) -> bytes:
    data = yaml.safe_load(mlmodel_text)
    data["flavors"]["python_function"].update(changes)
    return yaml.safe_dump(data).encode()


def test_registered_version_checks_out_and_predicts(yolo_store, tiny_yolo, tmp_path):
    checkpoint = registry.checkout(yolo_store["uri"], yolo_store["version"], tmp_path / "cache")
    assert checkpoint.parent.name == "data" and (checkpoint.parent.parent / "MLmodel").is_file()
    got = models.predict(checkpoint, tiny_yolo["images"])
    want = models.predict(tiny_yolo["checkpoint"], tiny_yolo["images"])
    assert all(np.array_equal(a["boxes"], b["boxes"]) for a, b in zip(got, want, strict=True))


def test_registered_version_with_malicious_best_pt_is_refused(yolo_store, tiny_yolo, tmp_path,
                                                              marker):
    evil = craft("real+payload", tmp_path / "evil.pt", marker, tiny_yolo["checkpoint"])
    with tampered(yolo_store["artifacts"] / "data" / "checkpoint" / "best.pt", evil.read_bytes()):
        checkpoint = registry.checkout(yolo_store["uri"], yolo_store["version"],
                                       tmp_path / "cache")
        with pytest.raises(ModelError, match="refused to load"):
            models.load(checkpoint)  # what serve, predict, evaluate and the champion run
    assert not marker.exists()


def test_registered_version_naming_another_loader_module_is_refused(yolo_store, tmp_path,
                                                                    marker):
    mlmodel_file = yolo_store["artifacts"] / "MLmodel"
    evil_loader(yolo_store["artifacts"], marker)
    try:
        evil = _with_flavor(mlmodel_file.read_text(), loader_module="evil_loader", code="code")
        with tampered(mlmodel_file, evil):
            with pytest.raises(ModelError, match=f"{NAME} v1: refused to load"):
                registry.checkout(yolo_store["uri"], yolo_store["version"], tmp_path / "a")
            with pytest.raises(ModelError, match=f"{NAME} v1: refused to load"):
                registry.checkout_model(yolo_store["uri"], yolo_store["version"], tmp_path / "b")
    finally:
        shutil.rmtree(yolo_store["artifacts"] / "code")
    assert not marker.exists()


CHANGES = {
    "loader module": {"loader_module": "mlflow.pyfunc.model"},
    "no loader module": {"loader_module": None},
    "code paths": {"code": "code"},
    "python_model (cloudpickle)": {"python_model": "python_model.pkl"},
    "data outside the model": {"data": "/etc"},
    "data elsewhere inside": {"data": "data"},
    "model_config": {"model_config": {"a": 1}},
}


@pytest.mark.parametrize("change", CHANGES, ids=list(CHANGES))
def test_mlmodel_other_than_visiongates_is_refused(change, yolo_store, tmp_path):
    model_dir = registry.checkout_model(yolo_store["uri"], yolo_store["version"], tmp_path)
    mlmodel.check_model_dir(model_dir, "v1")  # as logged: accepted
    path = model_dir / "MLmodel"
    path.write_bytes(_with_flavor(path.read_text(), **CHANGES[change]))
    with pytest.raises(ModelError, match="v1: refused to load"):
        mlmodel.check_model_dir(model_dir, "v1")


def test_another_flavor_a_symlink_or_a_huge_mlmodel_is_refused(yolo_store, tmp_path):
    model_dir = registry.checkout_model(yolo_store["uri"], yolo_store["version"], tmp_path)
    path, original = model_dir / "MLmodel", (model_dir / "MLmodel").read_text()
    data = yaml.safe_load(original)
    data["flavors"]["pytorch"] = {"pickle_module_name": "pickle"}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ModelError, match="expected only 'python_function'"):
        mlmodel.check_model_dir(model_dir, "v1")
    path.write_text(original)
    (model_dir / "data" / "checkpoint" / "extra").symlink_to("/etc/passwd")
    with pytest.raises(ModelError, match="symlink"):
        mlmodel.check_model_dir(model_dir, "v1")
    (model_dir / "data" / "checkpoint" / "extra").unlink()
    path.write_bytes(b"flavors: {}\n" + b"#" * mlmodel.MAX_BYTES)
    with pytest.raises(ModelError, match="bytes"):
        mlmodel.check_model_dir(model_dir, "v1")


def test_serving_app_loads_only_a_checked_local_folder(yolo_store, tmp_path, marker,
                                                       monkeypatch):
    from visiongate import rest

    monkeypatch.setenv(rest.MODEL_ENV, f"models:/{NAME}/1")  # a URI is never loaded unchecked
    with pytest.raises(ModelError, match="not a local model folder"):
        rest.create_app()
    model_dir = registry.checkout_model(yolo_store["uri"], yolo_store["version"], tmp_path)
    evil_loader(model_dir, marker)
    path = model_dir / "MLmodel"
    path.write_bytes(_with_flavor(path.read_text(), loader_module="evil_loader", code="code"))
    monkeypatch.setenv(rest.MODEL_ENV, str(model_dir))
    with pytest.raises(ModelError, match="refused to load"):
        rest.create_app()
    assert not marker.exists()


def test_loader_module_is_the_one_tracking_writes():
    from visiongate import serving

    assert serving.__name__ == mlmodel.LOADER_MODULE


def test_model_name_cannot_leave_the_cache(yolo_store, tmp_path):
    version = registry.Version("../../escape", "1", "", "", (), {})
    with pytest.raises(RegistryError, match="cannot name a local folder"):
        registry.checkout_model(yolo_store["uri"], version, tmp_path / "cache")
    assert not (tmp_path.parent / "escape-v1").exists()
