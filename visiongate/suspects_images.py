"""Suspected label mistakes of image-level labels and label maps (visiongate.suspects calls
these): cleanlab's label-quality scores for classifiers, mask agreement for segmenters."""

from __future__ import annotations

import numpy as np

from visiongate.datasets.coco import Split, read_semantic_mask
from visiongate.datasets.image_labels import labels_of
from visiongate.errors import DataError, NotFound
from visiongate.suspects_csv import Suspect


def _where(name: str, image: dict) -> tuple[str, str, int | None, str]:
    """(split, file, annotation, detail suffix): a crop names its source (crops.py)."""
    source = image.get("source")
    if isinstance(source, dict) and isinstance(source.get("file_name"), str) \
            and isinstance(source.get("annotation"), int):
        return name, source["file_name"], source["annotation"], f" (crop {image['file_name']})"
    return name, image["file_name"], None, ""


def _classify_suspects(split: Split, probs: list, name: str) -> list[Suspect]:
    from cleanlab.rank import get_label_quality_scores

    items = [(image, labels_of(split, image, False), p)
             for image, p in zip(split.images, probs, strict=True)]
    items = [(image, labels[0] - 1, np.asarray(p))
             for image, labels, p in items if len(labels) == 1]
    if not items:
        return []
    scores = get_label_quality_scores(np.array([k for _, k, _ in items]),
                                      np.stack([p for *_, p in items]))
    names, rows = split.class_names, []
    for (image, k, p), score in zip(items, scores, strict=True):
        split_name, file, ann, suffix = _where(name, image)
        top = int(np.argmax(p))
        detail = (f"labelled {names[k]}; the model sees {names[top]} ({p[top]:.2f})"
                  if top != k else f"labelled {names[k]} ({p[k]:.2f}); the model agrees")
        rows.append(Suspect(split_name, file, ann, "wrong_label", float(score), detail + suffix))
    return rows


def _multilabel_suspects(split: Split, probs: list, name: str) -> list[Suspect]:
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    if not split.images:
        return []
    targets = [[c - 1 for c in labels_of(split, image, True)] for image in split.images]
    probs_arr = np.stack([np.asarray(p, float) for p in probs])
    scores = get_label_quality_scores(targets, probs_arr)
    names, rows = split.class_names, []
    for image, given, p, score in zip(split.images, targets, probs_arr, scores, strict=True):
        quality = np.where(np.isin(np.arange(len(p)), given), p, 1 - p)
        k = int(np.argmin(quality))
        doubt = f"doubts {names[k]}" if k in given else f"also sees {names[k]}"
        labelled = ", ".join(names[c] for c in given) or "nothing"
        split_name, file, ann, suffix = _where(name, image)
        rows.append(Suspect(split_name, file, ann, "wrong_label", float(score),
                            f"labelled {labelled}; the model {doubt} ({p[k]:.2f})" + suffix))
    return rows


def mask_agreement(mask: np.ndarray, pred: np.ndarray, names) -> tuple[float, str]:
    """(mean IoU over the classes present in mask or prediction, background 0 left out;
    1.0 when neither has any), and the worst class in words."""
    ious = {}
    for k in np.union1d(np.unique(mask), np.unique(pred)):
        if 0 < k <= len(names):
            a, b = mask == k, pred == k
            ious[int(k)] = (np.count_nonzero(a & b) / np.count_nonzero(a | b), a.sum(), b.sum())
    if not ious:
        return 1.0, "no labelled class in mask or prediction"
    k, (iou, labelled, predicted) = min(ious.items(), key=lambda kv: kv[1][0])
    return float(np.mean([v[0] for v in ious.values()])), (
        f"worst class {names[k - 1]}: IoU {iou:.2f} (labelled {labelled} px, "
        f"predicted {predicted} px)")


def _semantic_suspects(split: Split, predictions: list, name: str) -> list[Suspect]:
    rows = []
    for image, pred in zip(split.images, predictions, strict=True):
        try:
            mask = read_semantic_mask(split, image)
        except NotFound:  # an image without a label map has nothing to check
            continue
        if np.shape(pred) != mask.shape:
            raise DataError(f"{image['file_name']}: prediction {np.shape(pred)} vs mask "
                            f"{mask.shape}")
        score, detail = mask_agreement(mask, np.asarray(pred), split.class_names)
        rows.append(Suspect(name, image["file_name"], None, "bad_mask", score, detail))
    return rows
