"""Data-parallel training with torch.distributed (models/distributed.py): `nproc: 2` trains
the U-Net and a torchvision detector on two real processes (gloo on the CPU). Rank 0 alone
reports and writes; the checkpoint loads and predicts like a single-process one; a second
run with more epochs resumes from it; YOLO refuses `nproc` (ultralytics has its own DDP)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from visiongate import models
from visiongate.config import DetectConfig, SegmentConfig, SynthConfig
from visiongate.datasets.synth import generate

pytestmark = pytest.mark.integration
CASES = [("segment", "unet"), ("detect", "ssdlite")]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate(SynthConfig(seed=3, image_size=64, splits={"train": 8, "val": 4, "test": 4}), root)
    return root


@pytest.mark.parametrize("section,family", CASES, ids=[f for _, f in CASES])
def test_two_processes_train_one_checkpoint_that_predicts_and_resumes(
        section, family, data_root, tmp_path, capfd):
    cls = SegmentConfig if section == "segment" else DetectConfig
    extra = {"base_channels": 4} if family == "unet" else {}
    cfg = cls(family=family, epochs=2, imgsz=64, batch=2, device="cpu", nproc=2, **extra)
    reported: list[int] = []
    checkpoint = models.train(cfg, data_root, tmp_path / "ckpt", lambda e, m: reported.append(e))
    assert reported == [1, 2]  # rank 0 alone reports, once per epoch
    out = capfd.readouterr().out
    assert out.count(f"{family} epoch 2/2 ") == 1  # and alone validates and prints
    state = torch.load(tmp_path / "ckpt" / "last.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 2 and state["config"]["nproc"] == 2
    assert not any(k.startswith("module.") for k in state["state_dict"])  # not DDP's wrapper
    meta = models.CheckpointMeta.read(checkpoint)
    assert meta.family == family and meta.config["device"] == "cpu"

    images = sorted((data_root / "test" / "images").glob("*.png"))
    preds = models.load(checkpoint)(images)
    assert len(preds) == len(images)
    if section == "segment":
        assert all(p.shape == (64, 64) and p.dtype == np.uint8 for p in preds)
    else:
        assert all(p["boxes"].shape[1:] == (4,) for p in preds)

    longer = cfg.model_copy(update={"epochs": 3})
    reported.clear()
    models.train(longer, data_root, tmp_path / "ckpt", lambda e, m: reported.append(e))
    assert reported == [3]
    # both ranks resumed from the same last.pt (two processes ran; only rank 0 reported)
    assert capfd.readouterr().out.count(f"{family}: resuming after epoch 2 from") == 2


def test_ultralytics_families_refuse_nproc():
    with pytest.raises(ValidationError, match="ultralytics' own DDP"):
        DetectConfig(family="yolo", nproc=2)
