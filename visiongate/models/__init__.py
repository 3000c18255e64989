"""One interface for every model family.

    train(cfg, data_root, out_dir, on_epoch) -> checkpoint directory
    predict(checkpoint, image_paths) -> predictions

A checkpoint is a directory holding `meta.json` (family, task, class names, the config
section it was trained with) and the family's weights file. Predictions are plain numpy:

- detection: one dict per image, {"boxes": (N,4) float xyxy pixels, "scores": (N,),
  "labels": (N,) int category ids (1..K, as in the COCO JSON)};
- semantic segmentation: one (H,W) uint8 label map per image (0 = background,
  k = category id k).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

OnEpoch = Callable[[int, dict[str, float]], None]
"""Called after each epoch with (epoch starting at 1, metrics such as losses and val scores)."""


def read_meta(checkpoint: Path) -> dict[str, Any]:
    meta_path = Path(checkpoint) / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{checkpoint} is not a visiongate checkpoint (no meta.json)")
    return json.loads(meta_path.read_text())


def write_meta(checkpoint: Path, **meta: Any) -> None:
    Path(checkpoint).mkdir(parents=True, exist_ok=True)
    (Path(checkpoint) / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))


def _family_module(family: str):
    if family == "yolo":
        from visiongate.models import yolo

        return yolo
    if family == "unet":
        from visiongate.models import unet

        return unet
    raise ValueError(f"unknown model family {family!r}; choose from ['unet', 'yolo']")


def train(cfg: Any, data_root: Path, out_dir: Path, on_epoch: OnEpoch | None = None) -> Path:
    """Train the family named in `cfg.family` on the canonical dataset at `data_root`."""
    return _family_module(cfg.family).train(cfg, Path(data_root), Path(out_dir), on_epoch or (lambda e, m: None))


def predict(checkpoint: Path, image_paths: list[Path]) -> list:
    return _family_module(read_meta(checkpoint)["family"]).predict(Path(checkpoint), list(image_paths))


def export_checkpoint(checkpoint: Path, out_dir: Path) -> Path:
    """Copy only what serving needs (meta.json + weights) into out_dir, for logging."""
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("meta.json", read_meta(checkpoint)["weights"]):
        shutil.copy2(checkpoint / name, out_dir / name)
    return out_dir
