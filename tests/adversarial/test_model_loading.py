"""Loading a checkpoint never executes code (issue #20): hostile `.pt` files in a checkpoint
folder, a crashed run's last.pt and local `weights:` files are refused before anything in
them runs; real checkpoints still load and predict under ultralytics' safe loading.

Each hostile file carries a payload that writes a marker file when unpickled in full
(hostile_models.Payload); every test asserts the marker never appears. One tiny real YOLO
(conftest.tiny_yolo) serves every test. Registered versions: test_registry_loading.py.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch
from hostile_models import TINY, Harmless, copy_checkpoint, craft, real_ckpt
from pydantic import ValidationError

from visiongate import models
from visiongate.config import DetectConfig, load_params
from visiongate.errors import ConfigError, ModelError
from visiongate.models import torch_loop, ultralytics_safe, yolo
from visiongate.weights_rule import ENV

pytestmark = pytest.mark.usefixtures("nothing_written_outside")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def scratch():
    """A YOLOv8n built from its yaml, to load `weights:` files into."""
    return yolo._ultralytics().YOLO("yolov8n.yaml", task="detect")


def test_the_payload_runs_when_unpickled_in_full(tmp_path, marker):
    pickle.loads(craft("pickle", tmp_path / "evil.pt", marker).read_bytes())
    assert marker.read_text() == "pwned"  # what a full unpickling (ultralytics' default) does


# ---- checkpoints: models.load / predict (serve, predict, evaluate, the champion) -----------
def test_real_checkpoint_loads_and_predicts_under_safe_loading(tiny_yolo, monkeypatch):
    from ultralytics.nn import tasks
    from ultralytics.utils import torch_utils

    monkeypatch.setenv(ultralytics_safe.ENV, "0")  # a user's setting does not turn it off
    monkeypatch.setattr(tasks, "SAFE_LOAD", False)
    predictions = models.load(tiny_yolo["checkpoint"])(tiny_yolo["images"])
    assert tasks.SAFE_LOAD is True
    assert torch_utils.torch_load is ultralytics_safe._weights_only_load
    assert len(predictions) == len(tiny_yolo["images"])
    assert all(p["boxes"].shape == (len(p["scores"]), 4) for p in predictions)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the raw pickle's, from torch
@pytest.mark.parametrize("kind", ["payload", "real+payload", "raw-pickle"])
def test_malicious_best_pt_is_refused(kind, tiny_yolo, tmp_path, marker):
    checkpoint = copy_checkpoint(tiny_yolo["checkpoint"], tmp_path / "ckpt")
    craft(kind, checkpoint / "best.pt", marker, tiny_yolo["checkpoint"])
    with pytest.raises(ModelError, match="refused to load this ultralytics checkpoint"):
        models.load(checkpoint)
    with pytest.raises(ModelError, match=r"best\.pt"):
        models.predict(checkpoint, tiny_yolo["images"][:1])
    assert not marker.exists()


@pytest.mark.parametrize("weights", ["../elsewhere/evil.pt", "/tmp/evil.pt", "sub/evil.pt"])
def test_meta_json_weights_outside_the_checkpoint_is_refused(weights, tiny_yolo, tmp_path,
                                                             marker):
    checkpoint = copy_checkpoint(tiny_yolo["checkpoint"], tmp_path / "ckpt")
    (tmp_path / "elsewhere").mkdir()
    craft("payload", tmp_path / "elsewhere" / "evil.pt", marker)
    meta = json.loads((checkpoint / "meta.json").read_text())
    (checkpoint / "meta.json").write_text(json.dumps({**meta, "weights": weights}))
    with pytest.raises(ModelError, match="weights must be a file name inside"):
        models.load(checkpoint)
    assert not marker.exists()


def test_weights_symlink_is_refused(tiny_yolo, tmp_path, marker):
    checkpoint = copy_checkpoint(tiny_yolo["checkpoint"], tmp_path / "ckpt")
    (checkpoint / "best.pt").unlink()
    (checkpoint / "best.pt").symlink_to(craft("payload", tmp_path / "evil.pt", marker))
    with pytest.raises(ModelError, match="symlink"):
        models.load(checkpoint)
    assert not marker.exists()


def test_resume_from_a_malicious_last_pt_is_refused(tiny_yolo, tmp_path, marker):
    """A crashed run's last.pt (ultralytics resumes from it) is safe-loaded too."""
    cfg, out = DetectConfig(**TINY), tmp_path / "work"
    (out / "ultralytics" / "weights").mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(cfg.model_dump(mode="json")))
    craft("real+payload", out / "ultralytics" / "weights" / "last.pt", marker,
          tiny_yolo["checkpoint"])
    with pytest.raises(ModelError, match=r"last\.pt"):
        models.train(cfg, tiny_yolo["data"], out)
    assert not marker.exists()


def test_strip_optimizer_reads_with_safe_loading(tmp_path, marker):
    """ultralytics re-reads last.pt/best.pt after training: that read is safe-loaded too."""
    yolo._ultralytics()
    from ultralytics.utils.torch_utils import strip_optimizer

    assert strip_optimizer(craft("payload", tmp_path / "last.pt", marker)) == {}
    assert not marker.exists()


# ---- local `weights:` files --------------------------------------------------------------------
def test_unpinned_pickle_weights_are_refused_with_how_to_trust_them(tiny_yolo, tmp_path,
                                                                    marker, monkeypatch):
    monkeypatch.setenv(ENV, str(tmp_path))  # inside the weights folder: safe loading decides
    evil = craft("real+payload", tmp_path / "evil.pt", marker, tiny_yolo["checkpoint"])
    cfg = DetectConfig(**TINY, weights=str(evil))
    with pytest.raises(ConfigError, match=f"detect.weights_sha256: {_sha(evil)}"):
        models.train(cfg, tiny_yolo["data"], tmp_path / "work")
    assert not marker.exists()


def test_a_params_edit_cannot_point_weights_at_a_pickle_elsewhere(tiny_yolo, tmp_path, marker,
                                                                   monkeypatch):
    """Outside the weights folder — named directly or through a link inside it — a file is
    refused before it is opened, whatever params.yaml says (visiongate.weights_rule)."""
    monkeypatch.delenv(ENV, raising=False)
    project, evil = tmp_path / "project", tmp_path / "evil.pt"
    (project / "weights").mkdir(parents=True)
    craft("real+payload", evil, marker, tiny_yolo["checkpoint"])
    (project / "weights" / "link.pt").symlink_to(evil)
    for named in (str(evil), "weights/link.pt", "weights/../../evil.pt"):
        (project / "params.yaml").write_text(f"detect:\n  weights: {named}\n")
        with pytest.raises(ConfigError, match="outside the weights folder.*pickle"):
            load_params(project / "params.yaml")
    monkeypatch.chdir(project)  # a config built in code is checked when it loads
    with pytest.raises(ConfigError, match="outside the weights folder"):
        yolo._model(DetectConfig(**TINY, weights="weights/link.pt"), yolo._ultralytics(), "detect")
    assert not marker.exists()


def test_wrong_sha256_is_refused_before_loading(tmp_path, marker):
    evil = craft("payload", tmp_path / "evil.pt", marker)
    with pytest.raises(ConfigError, match="not the pinned detect.weights_sha256"):
        ultralytics_safe.load_weights(None, evil, "0" * 64, "detect")  # nothing to load into
    assert not marker.exists()


def test_real_weights_load_safely_without_a_pin(tiny_yolo, monkeypatch):
    monkeypatch.setenv(ENV, str(tiny_yolo["checkpoint"]))
    cfg = DetectConfig(**TINY, weights=str(tiny_yolo["checkpoint"] / "best.pt"))
    assert yolo._model(cfg, yolo._ultralytics(), "detect").ckpt  # kept for training


def test_pinned_weights_that_safe_loading_refuses_load_in_full(tiny_yolo, scratch, tmp_path,
                                                               marker):
    """A checkpoint with a class outside the allow-list: refused, unless its sha256 is pinned."""
    from ultralytics.nn import tasks

    path = tmp_path / "custom.pt"
    torch.save({**real_ckpt(tiny_yolo["checkpoint"]), "note": Harmless()}, path)
    with pytest.raises(ConfigError, match="safe loading refuses"):
        ultralytics_safe.load_weights(scratch, path, None, "detect")
    model = ultralytics_safe.load_weights(scratch, path, _sha(path).upper(), "detect")
    assert model.ckpt and isinstance(model.ckpt["note"], Harmless)
    assert tasks.SAFE_LOAD is True  # full loading was for that one file only
    assert not marker.exists()


def test_torch_family_weights_are_tensors_only(tmp_path, marker):
    evil, plain, net = tmp_path / "evil.pt", tmp_path / "plain.pt", torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="without unpickling"):
        torch_loop.load_local_weights(net, str(craft("payload", evil, marker)), "segment")
    torch.save(net.state_dict(), plain)
    with pytest.raises(ConfigError, match="not the pinned segment.weights_sha256"):
        torch_loop.load_local_weights(net, str(plain), "segment", "f" * 64)
    torch_loop.load_local_weights(net, str(plain), "segment", _sha(plain))
    assert not marker.exists()


def test_weights_sha256_is_a_sha256_of_a_named_file():
    with pytest.raises(ValidationError, match="weights_sha256"):
        DetectConfig(weights="w.pt", weights_sha256="not-a-digest")
    with pytest.raises(ValidationError, match="weights is unset"):
        DetectConfig(weights_sha256="a" * 64)
