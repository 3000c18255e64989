"""Fine-tuning from a local `weights:` file, every family: the tensors a model starts from are
the file's (compared tensor by tensor), a head for another class count is re-initialised, a
torchvision backbone saved on its own loads into the backbone, and only files inside the
weights folder (or pinned by sha256) are accepted (visiongate.weights_rule). Nothing trains:
each family's own loading step (`initial_model`, ultralytics' `_model`) is called directly;
one YOLO run stops where ultralytics starts training, to compare what it trains with."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from torchvision import models as tvm

from visiongate import models
from visiongate.config import ClassifyConfig, DetectConfig, SegmentConfig, SynthConfig, load_params
from visiongate.datasets.synth import generate
from visiongate.errors import ConfigError, ModelError
from visiongate.models import (classify, torchvision_detect, torchvision_segment, unet, yolo,
                               yolo_classify)
from visiongate.models.local_weights import REPORT_FILE, WeightsReport
from visiongate.weights_rule import ENV

K = 3
SECTIONS = {"detect": DetectConfig, "segment": SegmentConfig, "classify": ClassifyConfig}
MODULES = {"fasterrcnn": torchvision_detect, "retinanet": torchvision_detect,
           "ssdlite": torchvision_detect, "maskrcnn": torchvision_detect, "unet": unet,
           "fcn": torchvision_segment, "deeplabv3": torchvision_segment, "resnet18": classify,
           "mobilenet_v3_small": classify, "efficientnet_b0": classify}


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    """The weights folder, named by the environment as a deployment would; the test runs in
    its parent (configs built in code resolve `weights` against the current directory)."""
    path = tmp_path / "weights"
    path.mkdir()
    monkeypatch.setenv(ENV, str(path))
    monkeypatch.chdir(tmp_path)
    return path


def config(section: str, family: str, **overrides):
    base = {"family": family, "imgsz": 64, **({"base_channels": 4} if family == "unet" else {})}
    return SECTIONS[section](**{**base, **overrides})


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Trainable tensors set to values no fresh build has: equality means loaded."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen))
    return model


def _overlap_equal(a: torch.Tensor, b: torch.Tensor) -> bool:  # a slice copied?
    corner = tuple(slice(0, min(x, y)) for x, y in zip(a.shape, b.shape))
    return torch.equal(a[corner], b[corner])


# ---- plain torch families: whole-model files ---------------------------------------------
TORCH = [("detect", "fasterrcnn"), ("detect", "retinanet"), ("detect", "ssdlite"),
         ("segment", "maskrcnn"), ("segment", "unet"), ("segment", "fcn"),
         ("segment", "deeplabv3"), ("classify", "resnet18"), ("classify", "mobilenet_v3_small"),
         ("classify", "efficientnet_b0")]


@pytest.mark.parametrize("section,family", TORCH, ids=[f for _, f in TORCH])
def test_whole_model_file_loads_and_another_class_count_reinitialises_the_head(
        section, family, folder, capsys):
    module = MODULES[family]
    n = K if section == "classify" else K + 1  # + background
    source, _ = module.initial_model(config(section, family), n)
    torch.save(randomised(source).state_dict(), folder / "whole.pt")
    model, report = module.initial_model(config(section, family, weights="weights/whole.pt"),
                                         n + 1)  # the dataset has one class more
    saved = torch.load(folder / "whole.pt", weights_only=True)
    own = model.state_dict()
    fits = [k for k, v in saved.items() if own[k].shape == v.shape]
    other = sorted(set(saved) - set(fits))
    assert other and all(not _overlap_equal(own[k], saved[k]) for k in other)  # fresh heads
    assert all(torch.equal(own[k], saved[k]) for k in fits)  # everything else: the file's
    assert (report.loaded, report.total, report.not_in_file) == (len(fits), len(own), 0)
    assert list(report.reinitialised) == other and report.matched == "as saved"
    assert report.path == str(folder / "whole.pt")
    printed = capsys.readouterr().out
    assert f"{section}.weights: loaded {len(fits)}/{len(own)} tensors" in printed
    assert other[0] in printed


# ---- torchvision families: backbone-only files -------------------------------------------
@pytest.fixture(scope="module")
def classifiers(tmp_path_factory) -> Path:
    """torchvision classifiers' state dicts, as ImageNet weights are (random values here)."""
    path = tmp_path_factory.mktemp("backbones")
    torch.save(randomised(tvm.resnet50(weights=None)).state_dict(), path / "resnet50.pt")
    torch.save(randomised(tvm.mobilenet_v3_large(weights=None)).state_dict(),
               path / "mobilenet_v3_large.pt")
    return path


# (section, family, backbone, classifier file, where torchvision keeps the classifier's
# layers in the model: resnet keys under the prefix, mobilenet `features.N` as prefix + N)
BACKBONES = [("detect", "fasterrcnn", "resnet50_fpn", "resnet50", "backbone.body."),
             ("detect", "retinanet", "mobilenet_v3_large_fpn", "mobilenet_v3_large",
              "backbone.body."),
             ("segment", "maskrcnn", "mobilenet_v3_large_fpn", "mobilenet_v3_large",
              "backbone.body."),
             ("segment", "fcn", "resnet50", "resnet50", "backbone."),
             ("segment", "deeplabv3", "mobilenet_v3_large", "mobilenet_v3_large", "backbone.")]


@pytest.mark.parametrize("section,family,backbone,file,prefix", BACKBONES,
                         ids=[f"{b[1]}-{b[2]}" for b in BACKBONES])
def test_backbone_only_file_loads_into_the_backbone(section, family, backbone, file, prefix,
                                                     classifiers, monkeypatch):
    monkeypatch.setenv(ENV, str(classifiers))
    cfg = config(section, family, backbone=backbone, weights=str(classifiers / f"{file}.pt"))
    model, report = MODULES[family].initial_model(cfg, K + 1)
    saved = torch.load(classifiers / f"{file}.pt", weights_only=True)
    own = model.state_dict()
    expected = {prefix + k.removeprefix("features."): k for k in saved
                if not k.startswith(("fc.", "classifier."))}
    assert expected and all(torch.equal(own[m], saved[k]) for m, k in expected.items())
    assert report.loaded == len(expected) and report.reinitialised == ()
    assert report.not_in_file == len(own) - len(expected) > 0  # heads (and FPN): as built
    assert report.matched.startswith("as a backbone")


def test_ssdlite_takes_a_mobilenet_backbone_regrouped(classifiers, monkeypatch):
    """SSDlite regroups MobileNetV3's layers around C4 (features.13) and, built without
    torchvision's backbone weights, halves the last stage: those tensors stay as built."""
    monkeypatch.setenv(ENV, str(classifiers))
    cfg = config("detect", "ssdlite", weights=str(classifiers / "mobilenet_v3_large.pt"))
    model, report = torchvision_detect.initial_model(cfg, K + 1)
    saved, own = torch.load(cfg.weights, weights_only=True), model.state_dict()
    for theirs, ours in [("features.0.0.weight", "backbone.features.0.0.0.weight"),
                         ("features.12.block.1.0.weight", "backbone.features.0.12.block.1.0.weight"
                          ),
                         ("features.13.block.0.0.weight", "backbone.features.0.13.0.weight"),
                         # (a slice of a Sequential keeps its indices: block[1:] starts at 1)
                         ("features.13.block.1.0.weight", "backbone.features.1.0.1.0.weight")]:
        assert torch.equal(own[ours], saved[theirs]), theirs
    assert report.matched == "as a backbone (mapped key by key)" and report.loaded > 200
    assert "backbone.features.1.3.0.weight" in report.reinitialised  # features.16: 480 wide


# ---- ultralytics families ----------------------------------------------------------------
@pytest.fixture(scope="module")
def ultralytics():
    return yolo._ultralytics()


def _ultralytics_source(ultralytics, family: str, yaml: str, task: str, path: Path) -> dict:
    """A randomised model saved as ultralytics saves one (in half precision); the tensors
    the file holds, as float32."""
    source = ultralytics.RTDETR(yaml) if family == "rtdetr" else ultralytics.YOLO(yaml, task=task)
    randomised(source.model)
    source.save(str(path))
    return {k: v.half().float() if v.is_floating_point() else v.float()
            for k, v in source.model.state_dict().items()}


# detect's yolo: test_yolo_training_starts_from_the_file_with_a_head_for_the_dataset
ULTRALYTICS = [("detect", "rtdetr", "yolov8n-rtdetr.yaml", "detect"),
               ("segment", "yolo", "yolov8n-seg.yaml", "segment"),
               ("classify", "yolo", "yolov8n-cls.yaml", "classify")]


@pytest.mark.parametrize("section,family,yaml,task", ULTRALYTICS, ids=[u[2] for u in ULTRALYTICS])
def test_ultralytics_weights_are_the_files(section, family, yaml, task, ultralytics, folder):
    saved = _ultralytics_source(ultralytics, family, yaml, task, folder / "source.pt")
    cfg = config(section, family, model=yaml, weights=str(folder / "source.pt"))
    loaded = yolo_classify._model(cfg, ultralytics) if section == "classify" else \
        yolo._model(cfg, ultralytics, task)
    own = loaded.model.state_dict()
    assert own.keys() == saved.keys()
    assert all(torch.equal(own[k].float(), v) for k, v in saved.items())
    assert loaded.ckpt  # ultralytics trains from the loaded model only while ckpt is set


class _Stop(Exception):
    """Raised where ultralytics starts training."""


def test_yolo_training_starts_from_the_file_with_a_head_for_the_dataset(ultralytics, folder,
                                                                        tmp_path, monkeypatch):
    """Stopped where ultralytics starts training: the model it built for the dataset's 3
    classes holds the file's tensors (80 classes) except the class outputs, and the report
    in the training folder says so."""
    from ultralytics.engine.trainer import BaseTrainer

    saved = _ultralytics_source(ultralytics, "yolo", "yolov8n.yaml", "detect", folder / "80.pt")
    generate(SynthConfig(seed=3, image_size=64, splits={"train": 4, "val": 2}), tmp_path / "data")
    trained: dict = {}
    run_callbacks = BaseTrainer.run_callbacks

    def stop_at_start(self, event: str) -> None:
        run_callbacks(self, event)
        if event == "on_pretrain_routine_end":
            trained.update({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
            raise _Stop

    monkeypatch.setattr(BaseTrainer, "run_callbacks", stop_at_start)
    cfg = config("detect", "yolo", weights="80.pt", epochs=1, batch=2, device="cpu")
    monkeypatch.chdir(folder)  # a config built in code: `weights` relative to here
    with pytest.raises(_Stop):
        models.train(cfg, tmp_path / "data", tmp_path / "work")
    fits = [k for k, v in saved.items() if trained[k].shape == v.shape]
    assert all(torch.equal(trained[k].float(), saved[k]) for k in fits)
    other = sorted(set(saved) - set(fits))
    assert other and all(".cv3." in k for k in other)  # the class outputs, now 3 wide
    assert all(K in trained[k].shape for k in other)
    assert json.loads((tmp_path / "work" / REPORT_FILE).read_text())["section"] == "detect"
    report = WeightsReport.read(tmp_path / "work")
    assert (report.loaded, list(report.reinitialised)) == (len(fits), other)
    assert report.tags()["weights.loaded"] == f"{len(fits)}/{len(trained)}"


# ---- the weights folder rule -------------------------------------------------------------
def _params(root: Path, section: str, name: str = "params.yaml", **fields) -> Path:
    lines = [f"{section}:"] + [f"  {k}: {v}" for k, v in fields.items()]
    (root / name).write_text("\n".join(lines) + "\n")
    return root / name


def test_weights_outside_the_folder_are_a_config_error(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    outside = tmp_path / "elsewhere.pt"
    torch.save({}, outside)
    with pytest.raises(ConfigError) as err:
        load_params(_params(tmp_path, "segment", family="fcn", weights=str(outside)))
    assert all(part in str(err.value) for part in ("segment.weights:", str(outside),
                                                   str(tmp_path / "weights"), "weights_sha256"))
    with pytest.raises(ConfigError, match=r"weights folder .*pickle: loading it can run code"):
        load_params(_params(tmp_path, "detect", weights="../elsewhere.pt"))


def test_a_link_inside_the_folder_to_a_file_outside_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    (tmp_path / "weights").mkdir()
    torch.save({}, tmp_path / "outside.pt")
    (tmp_path / "weights" / "link.pt").symlink_to(tmp_path / "outside.pt")
    with pytest.raises(ConfigError, match=r"classify.weights: weights/link.pt \(resolves to "
                                          r".*outside.pt\) is outside the weights folder"):
        load_params(_params(tmp_path, "classify", weights="weights/link.pt"))


def test_inside_the_folder_or_pinned_is_accepted_relative_to_the_project(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    (tmp_path / "weights").mkdir()
    monkeypatch.chdir(tmp_path.parent)  # the project root is params.yaml's folder, not here
    params = load_params(_params(tmp_path, "segment", weights="weights/unet.pt"))
    assert params.segment.weights_file() == (tmp_path / "weights" / "unet.pt").resolve()
    with pytest.raises(FileNotFoundError, match="segment.weights: no local file"):
        unet.initial_model(params.segment, K + 1)  # missing: as before, nothing downloaded
    outside = tmp_path / "elsewhere.pt"
    torch.save({"w": torch.zeros(1)}, outside)
    digest = hashlib.sha256(outside.read_bytes()).hexdigest()
    pinned = load_params(_params(tmp_path, "segment", weights=str(outside),
                                 weights_sha256=digest)).segment
    assert pinned.weights_file() == outside.resolve()


def test_only_the_environment_moves_the_folder(tmp_path, monkeypatch):
    (elsewhere := tmp_path / "shared-weights").mkdir()
    monkeypatch.delenv(ENV, raising=False)
    path = _params(tmp_path, "detect", family="fasterrcnn", weights=str(elsewhere / "f.pt"))
    with pytest.raises(ConfigError, match="outside the weights folder"):
        load_params(path)
    with pytest.raises(ConfigError, match="weights_dir: Extra inputs"):  # no key widens it
        load_params(_params(tmp_path, "detect", "widened.yaml", weights_dir=str(elsewhere)))
    monkeypatch.setenv(ENV, str(elsewhere))
    assert load_params(path).detect.weights_file() == (elsewhere / "f.pt").resolve()


def test_loading_checks_the_rule_and_the_pin_again(tmp_path, folder, monkeypatch):
    """A config built in code is checked when its weights load (relative to the current
    directory); a pinned file loads from anywhere, unless its bytes differ from the pin."""
    outside = tmp_path / "outside.pt"
    torch.save(randomised(unet.UNet(K + 1, 4, unet.DEPTH)).state_dict(), outside)
    with pytest.raises(ConfigError, match="outside the weights folder"):
        unet.initial_model(config("segment", "unet", weights=str(outside)), K + 1)
    with pytest.raises(ConfigError, match="not the pinned segment.weights_sha256"):
        unet.initial_model(config("segment", "unet", weights=str(outside),
                                  weights_sha256="0" * 64), K + 1)
    digest = hashlib.sha256(outside.read_bytes()).hexdigest()
    model, report = unet.initial_model(config("segment", "unet", weights=str(outside),
                                              weights_sha256=digest), K + 1)
    assert report.loaded == report.total and all(
        torch.equal(model.state_dict()[k], v) for k, v in torch.load(outside, weights_only=True).items())
    torch.save({"unrelated.weight": torch.zeros(2)}, folder / "other.pt")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match="shares no tensor with this model"):
        classify.initial_model(config("classify", "resnet18", weights="weights/other.pt"), K)
