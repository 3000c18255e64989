"""Device selection with monkeypatched CUDA / MPS availability."""

import pytest
import torch
from pydantic import ValidationError

from visiongate import devices
from visiongate.config import DetectConfig


@pytest.fixture
def machine(monkeypatch):
    """machine(cuda=N GPUs, mps=bool) makes torch report that hardware."""
    def set_up(cuda: int = 0, mps: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    return set_up


@pytest.mark.parametrize("cuda,mps,expected", [(1, True, "cuda:0"), (0, True, "mps"), (0, False, "cpu")])
def test_auto_prefers_cuda_then_mps_then_cpu(machine, cuda, mps, expected):
    machine(cuda, mps)
    device = devices.select_device("auto")
    assert str(device) == expected
    assert devices.amp_enabled(device) == (expected == "cuda:0")


def test_explicit_specs(machine):
    machine(cuda=2)
    assert str(devices.select_device("cuda:1")) == "cuda:1"
    assert str(devices.select_device("1")) == "cuda:1"
    assert str(devices.select_device("0,1")) == "cuda:0"   # torch families: the first GPU
    assert devices.ultralytics_device("0,1") == "0,1"       # YOLO: DDP over both
    assert devices.ultralytics_device("auto") == "0"
    assert devices.ultralytics_device("cpu") == "cpu"
    assert str(devices.select_device("cpu")) == "cpu"


def test_unavailable_hardware_is_a_clear_error(machine):
    machine(cuda=1)
    with pytest.raises(ValueError, match=r"CUDA device\(s\) \[1\] not present"):
        devices.select_device("0,1")
    with pytest.raises(ValueError, match="MPS is not available"):
        devices.select_device("mps")
    machine(cuda=0)
    with pytest.raises(ValueError, match="CUDA is not available"):
        devices.select_device("cuda:0")
    assert devices.ultralytics_device("auto") == "cpu"


def test_malformed_spec_names_the_choices():
    with pytest.raises(ValueError, match="choose from auto"):
        devices.check_device_spec("gpu")
    with pytest.raises(ValidationError, match="device 'gpu'"):
        DetectConfig(device="gpu")
    assert DetectConfig(device=" CUDA:0 ").device == "cuda:0"
