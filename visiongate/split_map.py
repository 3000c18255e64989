"""A map of the test split: each image's features (visiongate.explain's embeddings) projected
to 2-D with scikit-learn's t-SNE, coloured by class and by outcome, and saved (npz) for
later comparison.

The evaluation writes what it knows of each image (`image_outcomes.json` beside its plots):
its class — the most frequent object class, the largest labelled region, or the image
label — and its outcome: `correct` / `missed` / `false positive` / `wrong class` for a
detector (at the operating point), `correct` / `wrong` for a classifier, or the image's
mIoU for a segmenter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from visiongate.datasets import safe_load
from visiongate.plots import _save, plt

OUTCOMES_FILE = "image_outcomes.json"
OUTCOME_COLOURS = {"correct": "tab:green", "missed": "tab:orange", "false positive": "tab:red",
                   "wrong class": "tab:purple", "wrong": "tab:red"}


@dataclass(frozen=True)
class ImageOutcomes:
    files: list[str]                 # file_name in the split, evaluation order
    classes: list[str]
    outcomes: list[str | float]
    worst: list[str]                 # the report gallery's images, worst first


def write_outcomes(plots_dir: Path, outcomes: ImageOutcomes) -> Path:
    path = Path(plots_dir) / OUTCOMES_FILE
    path.write_text(json.dumps(outcomes.__dict__))
    return path


def read_outcomes(plots_dir: Path) -> ImageOutcomes | None:
    path = Path(plots_dir) / OUTCOMES_FILE
    if not path.is_file():
        return None
    data = safe_load.load_json(path)
    return ImageOutcomes(*(list(data[k]) for k in ("files", "classes", "outcomes", "worst")))


def detection_outcome(match) -> str:
    """One word for an image's detections at the operating point (diagnostics.ImageMatch)."""
    if (match.gt_match < 0).any():
        return "missed"
    if (match.det_match < 0).any():
        return "false positive"
    matched = match.det_match >= 0
    if (match.labels[matched] != match.gt_labels[match.det_match[matched]]).any():
        return "wrong class"
    return "correct"


def project(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, 2) t-SNE coordinates (perplexity capped for small splits); PCA's first two
    components below 5 images, where t-SNE is undefined."""
    x = np.asarray(embeddings, np.float64)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
    n = len(x)
    if n < 5:
        _, _, vt = np.linalg.svd(x, full_matrices=False) if n > 1 else (None, None, np.eye(2, x.shape[1]))
        out = x @ vt[:2].T if n > 1 else np.zeros((n, 2))
        return np.pad(out, ((0, 0), (0, max(0, 2 - out.shape[1]))))
    from sklearn.manifold import TSNE

    return TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca",
                random_state=seed).fit_transform(x)


def plot_map(coords: np.ndarray, outcomes: ImageOutcomes, out: Path, title: str) -> Path:
    """Two panels: points coloured by class, and by outcome (or per-image mIoU)."""
    fig, (by_class, by_outcome) = plt.subplots(1, 2, figsize=(11, 4.8))
    for name in sorted(set(outcomes.classes)):
        idx = [i for i, c in enumerate(outcomes.classes) if c == name]
        by_class.scatter(coords[idx, 0], coords[idx, 1], s=14, label=name)
    by_class.legend(fontsize=7, markerscale=1.2, loc="best")
    by_class.set_title("by class")
    values = outcomes.outcomes
    if values and all(isinstance(v, (int, float)) for v in values):
        points = by_outcome.scatter(coords[:, 0], coords[:, 1], s=14, c=values, cmap="RdYlGn",
                                    vmin=0, vmax=1)
        fig.colorbar(points, ax=by_outcome, label="image mIoU")
        by_outcome.set_title("by outcome (mIoU per image)")
    else:
        for name in sorted(set(map(str, values))):
            idx = [i for i, v in enumerate(values) if str(v) == name]
            by_outcome.scatter(coords[idx, 0], coords[idx, 1], s=14, label=name,
                               c=OUTCOME_COLOURS.get(name, "tab:gray"))
        by_outcome.legend(fontsize=7, loc="best")
        by_outcome.set_title("by outcome")
    for ax in (by_class, by_outcome):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    return _save(fig, out)


def save_embeddings(out: Path, outcomes: ImageOutcomes, embeddings: np.ndarray,
                    coords: np.ndarray) -> Path:
    """The map's data: file names, classes, outcomes (as text), features and coordinates."""
    np.savez_compressed(out, files=np.array(outcomes.files), classes=np.array(outcomes.classes),
                        outcomes=np.array([str(v) for v in outcomes.outcomes]),
                        embeddings=embeddings.astype(np.float32), coords=coords.astype(np.float32))
    return out
