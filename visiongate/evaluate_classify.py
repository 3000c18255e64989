"""Score an image classifier on a split (visiongate.evaluate sends meta tasks "classify"
and "multilabel" here).

Which images are scored (`scored_images`): a single-label model, the images with exactly
one label (visiongate.datasets.image_labels: explicit `labels`, else the largest object's
category) — an image with no label or several has no single right answer and is left out,
as training leaves it out; a multi-label model, every image (one without labels has every
class absent). The metrics say how many images were scored: `images_scored`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_curve

from visiongate import (bootstrap_classify, classify_metrics, models, plots, plots_classify,
                        split_map)
from visiongate.datasets.coco import Split
from visiongate.datasets.image_labels import single_label_images, split_targets
from visiongate.errors import DataError

GALLERY_SIZE = 8


def _class_index(split: Split) -> dict[int, int]:
    """Category id -> class index (categories sorted by id: the models' output order)."""
    return {int(c["id"]): k for k, c in enumerate(sorted(split.categories, key=lambda c: c["id"]))}


def _index_of(index: dict[int, int], category_id: int, split: Split) -> int:
    if category_id not in index:
        raise DataError(f"{split.root}: label {category_id} is not a category id of the split")
    return index[category_id]


def scored_images(split: Split, multi_label: bool) -> tuple[list[dict], np.ndarray]:
    """(images, targets) a classifier is scored on (module docstring), in split order:
    targets (N,) class indices, or multi-label (N, K) bool."""
    index = _class_index(split)
    if multi_label:
        targets = np.zeros((len(split.images), len(index)), dtype=bool)
        for row, labels in enumerate(split_targets(split, multi_label=True)):
            targets[row, [_index_of(index, c, split) for c in labels]] = True
        return list(split.images), targets
    pairs = single_label_images(split)
    if not pairs:
        raise DataError(f"{split.root}: no image has exactly one label; a single-label "
                        "classifier has nothing to be scored on")
    return ([image for image, _ in pairs],
            np.array([_index_of(index, c, split) for _, c in pairs], dtype=np.int64))


def evaluate_classification(checkpoint: Path, split: Split, meta: models.CheckpointMeta,
                            plots_dir: Path | None = None,
                            records_path: Path | None = None,
                            runtime: str = "torch") -> dict[str, float]:
    """Predict the scored images (with `runtime`, visiongate.models.load) and score them
    (`score_classification`); a multi-label checkpoint's thresholds come from its meta.json
    (0.5 per class when it has none)."""
    multi_label = meta.task == "multilabel"
    images, targets = scored_images(split, multi_label)
    probs = models.predict(checkpoint, [split.image_path(im) for im in images], runtime)
    thresholds = getattr(meta, "thresholds", None) if multi_label else None
    return score_classification(split, images, targets, probs, multi_label, thresholds,
                                plots_dir, records_path)


def score_classification(split: Split, images: list[dict], targets: np.ndarray, probs,
                         multi_label: bool, thresholds=None, plots_dir: Path | None = None,
                         records_path: Path | None = None) -> dict[str, float]:
    """classify_metrics.classification_metrics of ``probs`` (one (K,) vector per image of
    ``images``) plus ``images_scored``; with ``records_path`` the bootstrap records
    (visiongate.bootstrap_classify), with ``plots_dir`` the report's PNGs:
    confusion_matrix.png (single-label), reliability.png, confident_mistakes.png and
    pr_curves.png (multi-label)."""
    names = list(split.class_names)
    if len(probs) != len(images):
        raise DataError(f"{len(images)} images but {len(probs)} predictions")
    try:
        probs = np.stack([np.asarray(p) for p in probs])
    except ValueError as err:
        raise DataError(f"predictions are not one probability vector per image ({err})") from None
    scores = classify_metrics.classification_metrics(probs, targets, names, multi_label,
                                                     thresholds)
    scores["images_scored"] = float(len(images))
    if records_path is not None:
        bootstrap_classify.classification_records(
            probs, targets, names, multi_label, thresholds,
            [im["id"] for im in images]).save(Path(records_path))
    if plots_dir is not None:
        paths = [split.image_path(im) for im in images]
        if multi_label:
            _multilabel_plots(paths, probs, targets, names, thresholds, scores, Path(plots_dir))
        else:
            _single_label_plots(paths, probs, targets, names, Path(plots_dir))
        _write_outcomes(images, probs, targets, names, multi_label, thresholds, Path(plots_dir))
    return scores


def _write_outcomes(images: list[dict], probs: np.ndarray, targets: np.ndarray,
                    names: list[str], multi_label: bool, thresholds, out: Path) -> None:
    """Per image its class and whether it was right (the test-split map's colours); the
    gallery's images are the most confident mistakes, as confident_mistakes.png shows."""
    if multi_label:
        limits = np.asarray(thresholds if thresholds is not None else
                            np.full(len(names), classify_metrics.DEFAULT_THRESHOLD))
        right = ((probs >= limits) == targets).all(axis=1)
        classes = [names[int(np.argmax(t))] if t.any() else "none" for t in targets]
    else:
        right = probs.argmax(axis=1) == targets
        classes = [names[t] for t in targets]
    worst = [i for i in np.argsort(-probs.max(axis=1), kind="stable") if not right[i]]
    split_map.write_outcomes(out, split_map.ImageOutcomes(
        [im["file_name"] for im in images], classes,
        ["correct" if r else "wrong" for r in right],
        [images[i]["file_name"] for i in worst[:GALLERY_SIZE]]))


def _single_label_plots(paths: list[Path], probs: np.ndarray, targets: np.ndarray,
                        names: list[str], out: Path) -> None:
    preds, confidence = probs.argmax(axis=1), probs.max(axis=1)
    cm = confusion_matrix(targets, preds, labels=list(range(len(names))))
    plots.confusion(cm, names, out / "confusion_matrix.png", "Top-1 class per test image")
    plots_classify.reliability_diagram(classify_metrics.reliability(probs, targets),
                                       out / "reliability.png")
    wrong = np.flatnonzero(preds != targets)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:GALLERY_SIZE]
    captions = [f"true {names[targets[i]]}, predicted {names[preds[i]]} ({confidence[i]:.2f})"
                for i in worst]
    plots_classify.image_gallery([(paths[i], text) for i, text in zip(worst, captions)],
                                 out / "confident_mistakes.png",
                                 "Most confident mistakes (top-1 probability)")


def _multilabel_plots(paths: list[Path], probs: np.ndarray, targets: np.ndarray,
                      names: list[str], thresholds, scores: dict[str, float], out: Path) -> None:
    if thresholds is None:
        thresholds = np.full(len(names), classify_metrics.DEFAULT_THRESHOLD)
    plots_classify.reliability_diagram(classify_metrics.reliability(probs, targets),
                                       out / "reliability.png", "probability of each class")
    # how sure the model was of each wrong decision: p for a false positive, 1 - p for a miss
    errors = (probs >= np.asarray(thresholds)) != targets
    sureness = np.where(errors, np.where(targets, 1 - probs, probs), -1.0)
    worst = [i for i in np.argsort(-sureness.max(axis=1), kind="stable")[:GALLERY_SIZE]
             if errors[i].any()]
    items = []
    for i in worst:
        classes = np.argsort(-sureness[i], kind="stable")[:errors[i].sum()][:2]
        items.append((paths[i], "\n".join(
            f"{'missed' if targets[i, c] else 'false'} {names[c]} (p {probs[i, c]:.2f})"
            for c in classes)))
    plots_classify.image_gallery(items, out / "confident_mistakes.png",
                                 "Most confident mistakes (false classes, missed classes)")
    curves = {}
    for c, name in enumerate(names):
        if targets[:, c].any():
            precision, recall, _ = precision_recall_curve(targets[:, c], probs[:, c])
            curves[name] = (precision, recall, scores[f"ap/{name}"])
    plots_classify.class_pr_curves(curves, out / "pr_curves.png")
