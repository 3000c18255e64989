"""Hostile model files for the model-loading tests (issue #20): a payload that writes a
marker file when it runs, and `.pt` files that carry it."""

from __future__ import annotations

import pickle
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch

TINY = {"epochs": 1, "imgsz": 64, "batch": 4, "device": "cpu"}
NAME = "shapes-detect"


class Payload:
    """Unpickled in full, this writes `marker`: what a malicious checkpoint would run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


class Harmless:
    """A class outside ultralytics' allow-list that runs nothing when unpickled."""


def real_ckpt(checkpoint: Path) -> dict:
    """A real visiongate YOLO checkpoint's contents (read with safe loading)."""
    from ultralytics.nn.tasks import torch_safe_load

    return torch_safe_load(str(checkpoint / "best.pt"), safe_only=True)[0]


def craft(kind: str, path: Path, marker: Path, real: Path | None = None) -> Path:
    """A hostile `.pt`: the payload alone, a real checkpoint carrying it, or a raw pickle."""
    if kind == "payload":
        torch.save({"model": Payload(marker), "train_args": {}}, path)
    elif kind == "real+payload":
        torch.save({**real_ckpt(real), "extra": Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"model": Payload(marker)}))
    return path


def copy_checkpoint(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in ("meta.json", "best.pt"):
        shutil.copy2(src / name, dst / name)
    return dst


def evil_loader(model_dir: Path, marker: Path) -> None:
    """A module MLflow would import (from the model's own `code` folder) when loading."""
    (model_dir / "code").mkdir(exist_ok=True)
    (model_dir / "code" / "evil_loader.py").write_text(
        f"open({str(marker)!r}, 'w').write('pwned')\n"
        "def _load_pyfunc(path):\n    return None\n")


@contextmanager
def tampered(path: Path, data: bytes):
    """path holds `data` for the block, its own bytes again after."""
    original = path.read_bytes()
    path.write_bytes(data)
    try:
        yield
    finally:
        path.write_bytes(original)
