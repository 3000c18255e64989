"""Pick the torch device: CUDA (AMP on), then MPS, then CPU."""

from __future__ import annotations

import torch


def select_device(spec: str = "auto") -> torch.device:
    """`auto` prefers CUDA, then Apple MPS, then CPU; anything else is passed to torch."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda:0")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} asked for, but CUDA is not available here")
    return device


def amp_enabled(device: torch.device) -> bool:
    """Mixed precision only where it pays and is stable: CUDA."""
    return device.type == "cuda"
