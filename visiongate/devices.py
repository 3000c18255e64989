"""Pick the torch device: CUDA (AMP on), then MPS, then CPU.

A device spec (params.yaml `device:`) is one of `auto`, `cpu`, `mps`, `cuda`, `cuda:N`, or
CUDA indices `N` / `N,M,...`. Several indices train YOLO with ultralytics' DDP; the
torch families (torchvision, U-Net) train on one device, the first index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from visiongate.errors import ConfigError
from visiongate.vocab import DEVICE_CHOICES as CHOICES  # noqa: F401 (re-exported)
from visiongate.vocab import check_device_spec  # the syntax check: no torch

if TYPE_CHECKING:
    import torch
# torch is imported where a device is resolved, not to check a spec in params.yaml.


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def cuda_indices(spec: str) -> list[int]:
    """The CUDA indices a spec names ([] for cpu / mps); `auto` resolves first."""
    import torch

    spec = check_device_spec(spec)
    if spec == "auto":
        return [0] if torch.cuda.is_available() else []
    if spec in ("cpu", "mps"):
        return []
    indices = [0] if spec == "cuda" else [int(i) for i in spec.removeprefix("cuda:").split(",")]
    if not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} asked for, but CUDA is not available here")
    count = torch.cuda.device_count()
    missing = [i for i in indices if i >= count]
    if missing:
        raise ConfigError(f"device {spec!r}: CUDA device(s) {missing} not present ({count} found)")
    return indices


def select_device(spec: str = "auto") -> torch.device:
    """`auto` prefers CUDA, then Apple MPS, then CPU; a multi-GPU spec gives its first GPU."""
    import torch

    spec = check_device_spec(spec)
    if spec == "mps" or (spec == "auto" and not torch.cuda.is_available() and _mps_available()):
        if not _mps_available():
            raise ConfigError("device 'mps' asked for, but Apple MPS is not available here")
        return torch.device("mps")
    indices = cuda_indices(spec)
    return torch.device(f"cuda:{indices[0]}") if indices else torch.device("cpu")


def ultralytics_device(spec: str = "auto") -> str:
    """The spec in ultralytics' terms: 'cpu', 'mps', '0' or '0,1' (DDP across those GPUs)."""
    device = select_device(spec)
    if device.type != "cuda":
        return device.type
    return ",".join(str(i) for i in cuda_indices(spec))


def amp_enabled(device: torch.device) -> bool:
    """Mixed precision only where it pays and is stable: CUDA."""
    return device.type == "cuda"
