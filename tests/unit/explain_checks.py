"""The explain check every family test runs on its 1-epoch checkpoint (no extra training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from visiongate.heatmap_views import explain_images


def check_explained(checkpoint: Path, image: Path, out: Path) -> None:
    """`visiongate explain`'s core on one image: the heatmap has the image's shape, finite
    values in [0, 1], and the overlay PNG is written beside it."""
    written, skipped = explain_images(checkpoint, [image, out / "missing.png"], out)
    assert skipped and skipped[0][0].endswith("missing.png")
    assert [p.name for p in written] == [f"{image.stem}.explained.png"]
    with Image.open(image) as im:
        size = im.size
    heat = np.asarray(Image.open(out / f"{image.stem}.heatmap.png")).astype(np.float64) / 65535
    assert heat.shape == size[::-1] and np.isfinite(heat).all()
    assert heat.min() >= 0 and heat.max() <= 1
    with Image.open(written[0]) as panel:
        assert panel.width > panel.height  # predictions and heatmap side by side
