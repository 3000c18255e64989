"""Heatmaps as pictures: `visiongate explain`'s overlays (image with the predictions drawn,
beside the heatmap over it) and the report's heatmap rows (candidate and champion on the
same images)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from visiongate import models, upright
from visiongate.batch_predict import overlay as overlay_predictions
from visiongate.batch_predict import scan_images
from visiongate.cells import readable_image
from visiongate.explain import Heatmap, explainer, overlay
from visiongate.models import CLASSIFY_TASKS, CheckpointMeta
from visiongate.models.samples import read_rgb

MIN_PANEL = 256  # small images are scaled up (nearest) so boxes and labels stay readable


def _scaled(rgb: np.ndarray) -> np.ndarray:
    scale = max(1.0, MIN_PANEL / max(1, min(rgb.shape[:2])))
    if scale == 1.0:
        return rgb
    size = (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_NEAREST)


def drawn(image: Path, prediction, meta: CheckpointMeta) -> np.ndarray:
    """The image with its predictions drawn as `visiongate predict` draws them (boxes at the
    model's operating point), scaled up when small."""
    threshold = None if meta.task in CLASSIFY_TASKS else meta.config.get("score_threshold", 0.25)
    return _scaled(np.asarray(overlay_predictions(image, meta, prediction, threshold)))


def heat_panel(rgb: np.ndarray, heat: Heatmap) -> np.ndarray:
    """The heatmap over the image, scaled as draw_prediction scales it."""
    return _scaled(overlay(rgb, heat.cam))


def _inputs(paths: list[Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Readable images among the paths (folders: every image under them) and (file, why)
    for the rest: reported and skipped, as `visiongate predict` does."""
    readable, skipped = [], []
    for path in map(Path, paths):
        if path.is_dir():
            found, bad = scan_images(path)
            readable += found
            skipped += [(str(path / f), why) for f, why in bad]
            continue
        try:
            readable_image(path.read_bytes(), decode=True)
            readable.append(path)
        except (OSError, ValueError) as err:
            skipped.append((str(path), str(err) or type(err).__name__))
    return readable, skipped


def _unique_stems(paths: list[Path]) -> list[str]:
    """Each image's file stem, `-2`, `-3`, ... appended where two share one."""
    seen: dict[str, int] = {}
    out = []
    for path in paths:
        key = path.stem.lower()  # case-insensitive file systems collide too
        seen[key] = seen.get(key, 0) + 1
        out.append(path.stem if seen[key] == 1 else f"{path.stem}-{seen[key]}")
    return out


def explain_images(checkpoint: Path, images: list[Path], out_dir: Path,
                   method: str | None = None) -> tuple[list[Path], list[tuple[str, str]]]:
    """Per readable image, `<stem>.explained.png` in out_dir (its predictions drawn, then the
    heatmap over it) and `<stem>.heatmap.png` (the heatmap alone, 16-bit: 65535 = 1).
    An EXIF-rotated or 16-bit photo is explained as the model sees it (upright, 8-bit).
    Returns (files written, (file, why) for each input skipped)."""
    meta = CheckpointMeta.read(checkpoint)
    heatmap, predict = explainer(checkpoint, method), models.load(checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, skipped = _inputs(images)
    stems = _unique_stems(paths)
    written = []
    with tempfile.TemporaryDirectory(prefix="visiongate-explain-") as tmp:
        for i, image in enumerate(paths):
            shown = upright.displayed_file(image, Path(tmp) / str(i))
            rgb, heat = read_rgb(shown), heatmap(shown)
            left = drawn(shown, predict([shown])[0], meta)
            right = heat_panel(rgb, heat)
            panel = np.concatenate([left, np.full((left.shape[0], 8, 3), 255, np.uint8),
                                    cv2.resize(right, left.shape[1::-1])], axis=1)
            stem = stems[i]
            Image.fromarray(panel).save(out_dir / f"{stem}.explained.png")
            Image.fromarray((heat.cam * 65535).round().astype(np.uint16)).save(
                out_dir / f"{stem}.heatmap.png")
            print(f"{out_dir / f'{stem}.explained.png'}  ({heat.target})", flush=True)
            written.append(out_dir / f"{stem}.explained.png")
    return written, skipped
