"""meta.json: one description for every family, versioned, refused when old, unknown or unsafe;
loading errors become a ModelError, errors while predicting do not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from visiongate import models, semantic
from visiongate.errors import ModelError, NotFound
from visiongate.models.meta import FORMAT_VERSION, META_FILE, CheckpointMeta

META = CheckpointMeta(family="unet", task="segment", class_names=("background", "square"),
                      weights="best.pt", config={"imgsz": 64})


def _write(folder: Path, **changes) -> Path:
    data = {**META.to_dict(), **changes}
    data = {k: v for k, v in data.items() if v is not None}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META_FILE).write_text(json.dumps(data))
    return folder


def test_round_trip_keeps_every_field(tmp_path):
    META.write(tmp_path)
    assert CheckpointMeta.read(tmp_path) == META
    assert json.loads((tmp_path / META_FILE).read_text())["format_version"] == FORMAT_VERSION == 2
    assert META.imgsz == 64 and META.weights_path(tmp_path) == tmp_path / "best.pt"


@pytest.mark.parametrize("version,found", [(99, "version 99"), (None, "version 1 "),
                                           ("2", "version '2'")])
def test_other_format_versions_are_refused_naming_file_and_versions(tmp_path, version, found):
    _write(tmp_path, format_version=version)
    with pytest.raises(ModelError) as err:
        CheckpointMeta.read(tmp_path)
    message = str(err.value)
    assert str(tmp_path / META_FILE) in message and found in message
    assert f"reads version {FORMAT_VERSION} only" in message and "Retrain" in message


@pytest.mark.parametrize("weights", ["../x.pt", "/etc/x.pt", "sub/x.pt", "..", "", "..\\x.pt",
                                     "C:x.pt", 3])
def test_weights_outside_the_checkpoint_folder_are_refused(tmp_path, weights):
    _write(tmp_path, weights=weights)
    with pytest.raises(ModelError, match="weights must be a file name inside"):
        CheckpointMeta.read(tmp_path)
    with pytest.raises(ModelError, match="weights must be a file name inside"):
        CheckpointMeta(family="unet", task="segment", class_names=(), weights=weights)


def test_symlinked_weights_are_refused(tmp_path):
    (tmp_path / "elsewhere.pt").write_bytes(b"x")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "best.pt").symlink_to(tmp_path / "elsewhere.pt")
    with pytest.raises(ModelError, match="symlink"):
        META.weights_path(tmp_path / "ckpt")


@pytest.mark.parametrize("changes,match", [
    ({"task": "classification"}, "task must be one of"),
    ({"class_names": "square"}, "class_names must be a list of strings"),
    ({"imgsz": 64}, r"unknown fields \['imgsz'\]"),
    ({"family": None}, r"missing fields \['family'\]"),
])
def test_malformed_descriptions_are_refused(tmp_path, changes, match):
    _write(tmp_path, **changes)
    with pytest.raises(ModelError, match=match):
        CheckpointMeta.read(tmp_path)


def test_missing_or_unreadable_meta(tmp_path):
    with pytest.raises(NotFound, match="not a visiongate checkpoint"):
        CheckpointMeta.read(tmp_path)
    (tmp_path / META_FILE).write_text("[1, 2")
    with pytest.raises(ModelError, match="not a readable checkpoint description"):
        CheckpointMeta.read(tmp_path)


def test_meta_imports_without_torch():
    code = "import sys, visiongate.models.meta; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_label_zero_never_takes_a_real_class_name():
    assert semantic.label_names(["circle"]) == ["background", "circle"]
    assert semantic.label_names(["background", "square"]) == \
        ["_background_", "background", "square"]


class _Family:
    """A fake family module: load(checkpoint) -> predict, both behaviours configurable."""

    def __init__(self, load_error=None, predict_error=None):
        self.load_error, self.predict_error = load_error, predict_error

    def load(self, checkpoint):
        if self.load_error:
            raise self.load_error

        def predict(paths):
            if self.predict_error:
                raise self.predict_error
            return [None] * len(paths)

        return predict


def test_load_errors_are_a_model_error_and_predict_errors_propagate(tmp_path, monkeypatch):
    _write(tmp_path, task="segment")
    family = _Family(load_error=RuntimeError("PytorchStreamReader failed reading zip archive"))
    monkeypatch.setattr(models, "_family_module", lambda name, task=None: family)
    with pytest.raises(ModelError, match=r"best.pt: the checkpoint cannot be loaded.*zip archive"):
        models.load(tmp_path)
    family.load_error, family.predict_error = None, RuntimeError("a bug in a kernel")
    predict = models.load(tmp_path)
    with pytest.raises(RuntimeError, match="a bug in a kernel") as err:
        predict([Path("a.png")])
    assert not isinstance(err.value, ModelError)
