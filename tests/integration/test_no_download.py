"""No family downloads anything: every network entry point the libraries use is made to
raise (and record the attempt), then every family is built and two are trained end to end."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

import pytest
import requests
import torch.hub

from visiongate import models
from visiongate.config import DetectConfig, SegmentConfig, SynthConfig
from visiongate.datasets.synth import generate

pytestmark = pytest.mark.integration


class DownloadAttempted(RuntimeError):
    pass


@pytest.fixture
def offline(monkeypatch) -> list[str]:
    """Patch torch.hub, torchvision, urllib, requests and ultralytics' downloaders to raise."""
    import torchvision.models._api  # noqa: F401  (imports load_state_dict_from_url by name)
    import ultralytics.utils.downloads  # noqa: F401

    attempts: list[str] = []

    def refuse(name):
        def fail(*args, **kwargs):
            attempts.append(f"{name}{args[:1]}")
            raise DownloadAttempted(f"{name} called with {args[:1]}")
        return fail

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse("torch.hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse("torch.hub.download"))
    monkeypatch.setattr(urllib.request, "urlopen", refuse("urlopen"))
    monkeypatch.setattr(requests.Session, "send", refuse("requests"))
    def local_only(name, original):
        """attempt_download_asset returns an existing local file untouched: only that may pass."""
        def check(file, *args, **kwargs):
            return original(file, *args, **kwargs) if Path(file).is_file() else refuse(name)(file)
        return check

    for module in [m for n, m in list(sys.modules.items()) if n.startswith(("ultralytics", "torchvision"))]:
        for name in ("attempt_download_asset", "safe_download", "load_state_dict_from_url"):
            if hasattr(module, name):
                label, original = f"{module.__name__}.{name}", getattr(module, name)
                monkeypatch.setattr(module, name, local_only(label, original)
                                    if name == "attempt_download_asset" else refuse(label))
    return attempts


def test_the_guard_catches_real_download_paths(offline):
    from torchvision.models import detection
    from ultralytics import YOLO

    with pytest.raises(DownloadAttempted):
        detection.fasterrcnn_mobilenet_v3_large_fpn(weights="DEFAULT")
    with pytest.raises(DownloadAttempted):
        YOLO("yolov8n.pt")
    assert len(offline) == 2


def test_every_family_builds_and_two_train_offline(offline, tmp_path):
    from visiongate.models import torchvision_detect, torchvision_segment, unet, yolo

    for family in ("fasterrcnn", "retinanet", "ssdlite"):
        torchvision_detect.build_model(DetectConfig(family=family, imgsz=64), 4)
    torchvision_detect.build_model(SegmentConfig(family="maskrcnn", imgsz=64), 4)
    for family in ("fcn", "deeplabv3"):
        torchvision_segment.build_model(SegmentConfig(family=family), 4)
    unet.UNet(4)
    ultralytics = yolo._ultralytics()
    ultralytics.YOLO("yolov8n.yaml"), ultralytics.YOLO("yolov8n-seg.yaml"), ultralytics.RTDETR("rtdetr-l.yaml")

    data = tmp_path / "data"
    generate(SynthConfig(seed=4, image_size=64, splits={"train": 8, "val": 4}), data)
    images = sorted((data / "val" / "images").glob("*.png"))
    for cfg in (SegmentConfig(family="yolo", epochs=1, imgsz=64, batch=4, device="cpu"),
                DetectConfig(family="fasterrcnn", epochs=1, imgsz=64, batch=4, device="cpu")):
        checkpoint = models.train(cfg, data, tmp_path / cfg.family)
        assert len(models.predict(checkpoint, images)) == len(images)
    assert offline == []
