"""What a retrain run shows beside its numbers: heatmaps of the report's worst test images
(the candidate's, and the champion's on the same images) and the map of the test split.

Runs after the evaluation, which leaves `image_outcomes.json` in the plots folder
(visiongate.split_map). Writes into that folder `heatmaps.png` and `test_map.png`, and
`embeddings.npz` into `out_dir`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from visiongate import models, plots, split_map
from visiongate.datasets.coco import load_split
from visiongate.explain import explainer
from visiongate.heatmap_views import drawn, heat_panel
from visiongate.models.samples import read_rgb

MAP_LIMIT = 2000  # images on the map (evenly spaced beyond that): t-SNE is quadratic


def _evenly(items: list, limit: int) -> list:
    if len(items) <= limit:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def heatmap_rows(candidate: Path, champion: Path | None, images: list[Path],
                 method: str | None = None) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """Per image: the candidate's predictions drawn, its heatmap, and the champion's."""
    meta = models.CheckpointMeta.read(candidate)
    predict, heat = models.load(candidate), explainer(candidate, method)
    theirs = explainer(champion, method) if champion is not None else None
    rows = []
    for image in images:
        rgb = read_rgb(image)
        ours = heat(image)
        panels = [("candidate's predictions", drawn(image, predict([image])[0], meta)),
                  (f"candidate — {ours.target}", heat_panel(rgb, ours))]
        if theirs is not None:
            other = theirs(image)
            panels.append((f"champion — {other.target}", heat_panel(rgb, other)))
        rows.append((image.name, panels))
    return rows


def explain_run(candidate: Path, champion: Path | None, split_dir: Path, plots_dir: Path,
                out_dir: Path, heatmaps: bool = True, test_map: bool = True,
                method: str | None = None) -> list[Path]:
    """The run's heatmap gallery and test-split map (what is enabled); the files written."""
    outcomes = split_map.read_outcomes(plots_dir)
    if outcomes is None:
        return []
    split, written = load_split(split_dir), []
    if heatmaps and outcomes.worst:
        images = [split.root / f for f in outcomes.worst]
        title = ("Worst test images — what the candidate looked at"
                 + (", beside the champion" if champion is not None else "")
                 + " (red: most, blue: least)")
        written.append(plots.heatmap_gallery(heatmap_rows(candidate, champion, images, method),
                                             plots_dir / "heatmaps.png", title))
    if test_map and outcomes.files:
        keep = _evenly(list(range(len(outcomes.files))), MAP_LIMIT)
        picked = split_map.ImageOutcomes([outcomes.files[i] for i in keep],
                                         [outcomes.classes[i] for i in keep],
                                         [outcomes.outcomes[i] for i in keep], outcomes.worst)
        heat = explainer(candidate, method)
        embeddings = np.stack([heat(split.root / f).embedding for f in picked.files])
        coords = split_map.project(embeddings)
        out_dir.mkdir(parents=True, exist_ok=True)
        written.append(split_map.save_embeddings(out_dir / "embeddings.npz", picked, embeddings,
                                                 coords))
        written.append(split_map.plot_map(coords, picked, plots_dir / "test_map.png",
                                          f"Test split ({len(keep)} images): t-SNE of the "
                                          "candidate's features"))
    return written
