"""Every checkpoint as an MLflow pyfunc model: one request format, one answer format.

Request: a DataFrame with one column `image`, each cell the base64 text of an image file
(PNG, JPEG, ... as read from disk). Through the REST API of `mlflow models serve`:

    {"dataframe_records": [{"image": "<base64>"}, ...], "params": {"min_score": 0.25}}

Answer: one JSON-friendly record per image, in request order:

    {"width": W, "height": H,
     "detections": [{"box": [x1, y1, x2, y2], "score": s, "label": k, "class_name": "circle",
                     "mask": {"size": [H, W], "counts": "<COCO RLE>"}}],   # detect / instance
     "segments": [{"label": k, "class_name": "circle", "pixels": n,
                   "mask": {"size": [H, W], "counts": "<COCO RLE>"}}]}     # semantic
     "top_k": [{"label": k, "class_name": "circle", "score": p}, ...],      # classify
     "labels": [{"label": k, "class_name": "circle", "score": p}]}
    {"error": "image i: ...", "reason": "not_base64" | "unreadable" | "too_large" | "failed"}

A bad row (not base64, undecodable, over `serve.max_pixels` by its header) answers an error
record and never fails the others: predict raises only for the whole request (no `image`
column, more rows than `serve.max_rows`; limits from visiongate.serve_limits).

Boxes are xyxy pixels, labels the COCO category ids 1..K; `mask` appears on instance
detections only; a semantic answer lists each predicted class (background left out) as
one COCO RLE mask (`pycocotools.mask.decode` turns it back into an array). Detections
below `min_score` are dropped (default 0.25; evaluation uses the config's lower `conf`).
A classifier answers its top-k classes (k = min(5, K)) by probability and its `labels`:
single-label, the top-1 class when its probability reaches `min_score` (default: the
model's `classify.min_score`), else none — an uncertain image is rejected, not guessed;
multi-label, every class at or above its own threshold (chosen on the val split at
training; a request's `min_score` replaces them all).

The logged model is this module as MLflow `loader_module` with the checkpoint folder
(meta.json + weights) as its data: no Python object is pickled by MLflow, and loading runs
the family's own predict (`visiongate.models`; ultralytics weights, which are pickles, only
through its safe loading). tracking.log_model writes it; visiongate loads a registered
version only after checking that its MLmodel is this one (visiongate.mlmodel).
"""

from __future__ import annotations

import base64
import logging
from functools import partial
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from visiongate import geometry, models, serve_limits
from visiongate.cells import SUFFIX, RowRefused, batches, readable_image, stage  # noqa: F401
from visiongate.errors import DataError, RequestTooLarge

DEFAULT_MIN_SCORE = 0.25
CLASSIFY_TASKS = ("classify", "multilabel")
TOP_K = 5

Predictor = Callable[[list[Path]], list]
log = logging.getLogger(__name__)


def predictor(checkpoint: Path) -> Predictor:
    """`image_paths -> predictions` for a checkpoint, loaded once, in the runtime it serves
    with (its deployment artifact when one passed the parity check; visiongate.export)."""
    return models.served(Path(checkpoint))


def encode_image(path: Path) -> str:
    """The request cell for an image file: its bytes as base64 text."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _class_name(meta: models.CheckpointMeta, label: int) -> str:
    """Category id k -> its class name (a class may be called "background" like any other)."""
    if 0 < label <= len(meta.class_names):
        return meta.class_names[label - 1]
    return "background" if label == 0 else str(label)


def _classes(meta: models.CheckpointMeta, probs: np.ndarray, index) -> list[dict]:
    return [{"label": int(i) + 1, "class_name": _class_name(meta, int(i) + 1),
             "score": round(float(probs[i]), 5)} for i in index]


def classify_record(meta: models.CheckpointMeta, probs: np.ndarray,
                    min_score: float | None) -> dict:
    """top_k and labels of one image's class probabilities (K,)."""
    probs = np.asarray(probs, dtype=np.float64)
    order = np.argsort(-probs, kind="stable")
    if meta.task == "multilabel":
        thresholds = np.full(len(probs), min_score) if min_score is not None else \
            np.asarray(getattr(meta, "thresholds", None) or [0.5] * len(probs))
        chosen = [i for i in order if probs[i] >= thresholds[i]]
    else:
        floor = meta.config.get("min_score", 0.5) if min_score is None else min_score
        chosen = [order[0]] if probs[order[0]] >= floor else []
    return {"top_k": _classes(meta, probs, order[:TOP_K]), "labels": _classes(meta, probs, chosen)}


def to_record(meta: models.CheckpointMeta, prediction: Any, size: tuple[int, int],
              min_score: float | None) -> dict:
    """One image's prediction (the models interface's numpy form) as a JSON-friendly dict;
    min_score None: the model's default (0.25 for detections)."""
    width, height = size
    record: dict[str, Any] = {"width": width, "height": height}
    if meta.task in CLASSIFY_TASKS:
        return {**record, **classify_record(meta, prediction, min_score)}
    min_score = DEFAULT_MIN_SCORE if min_score is None else min_score
    if meta.task == "segment":
        labels, counts = np.unique(prediction, return_counts=True)
        record["segments"] = [{"label": int(k), "class_name": _class_name(meta, int(k)),
                               "pixels": int(n), "mask": geometry.encode_mask(prediction == k)}
                              for k, n in zip(labels, counts) if k != 0]
        return record
    keep = np.flatnonzero(prediction["scores"] >= min_score)
    record["detections"] = []
    for i in keep:
        label = int(prediction["labels"][i])
        det = {"box": [round(float(v), 2) for v in prediction["boxes"][i]],
               "score": round(float(prediction["scores"][i]), 5), "label": label,
               "class_name": _class_name(meta, label)}
        if "masks" in prediction:
            det["mask"] = geometry.encode_mask(prediction["masks"][i])
        record["detections"].append(det)
    return record


def _predict_one(predict: Predictor, meta: models.CheckpointMeta, i: int, path: Path,
                 size: tuple[int, int], min_score: float | None) -> dict:
    """One row alone: its record, or its error (undecodable, or the model failed on it)."""
    try:
        return to_record(meta, predict([path])[0], size, min_score)
    except Exception:
        log.warning("image %d: prediction failed", i, exc_info=True)  # the server log only
    try:
        readable_image(path.read_bytes(), decode=True)
    except RowRefused as err:
        return err.record(i)
    return RowRefused("failed", "prediction failed (see the server log)").record(i)


def _predict_batch(predict: Predictor, meta: models.CheckpointMeta, rows: dict,
                   min_score: float | None) -> dict[int, dict]:
    """{row: record} for staged rows {row: (path, size)}, predicted together; when that
    fails (an image that passed `verify` but does not decode), row by row."""
    try:
        predictions = predict([path for path, _ in rows.values()])
        return {i: to_record(meta, prediction, size, min_score)
                for (i, (_, size)), prediction in zip(rows.items(), predictions, strict=True)}
    except Exception:
        log.info("batch prediction failed; predicting its %d images one by one", len(rows))
    return {i: _predict_one(predict, meta, i, path, size, min_score)
            for i, (path, size) in rows.items()}


def predict_cells(predict: Predictor, meta: models.CheckpointMeta, cells: list,
                  min_score: float | None, max_pixels: int | None = None) -> list[dict]:
    """Records for base64 cells; a cell that cannot be answered gets {"error", "reason"}
    (visiongate.cells). max_pixels (default: serve.max_pixels from the environment) bounds
    each image and each batch given to the model."""
    max_pixels = serve_limits.limits().max_pixels if max_pixels is None else max_pixels
    records: list[dict] = [{} for _ in cells]
    with tempfile.TemporaryDirectory(prefix="visiongate-serve-") as tmp:
        staged = {}
        for i, cell in enumerate(cells):
            try:
                staged[i] = stage(cell, Path(tmp) / f"{i:06d}", max_pixels)
            except RowRefused as err:
                records[i] = err.record(i)
        for group in batches(staged, max_pixels):
            rows = {i: staged[i] for i in group}
            for i, record in _predict_batch(predict, meta, rows, min_score).items():
                records[i] = record
    return records


class VisionModel:
    """The pyfunc model of a visiongate checkpoint, any family (weights loaded once)."""

    def __init__(self, checkpoint: Path):
        self.meta = models.CheckpointMeta.read(Path(checkpoint))
        self.predict_images = predictor(Path(checkpoint))

    def predict(self, model_input, params: dict | None = None) -> list[dict]:
        """model_input: a pandas DataFrame with column `image`; one record per row. Raises
        only for the whole request (DataError; RequestTooLarge above serve.max_rows)."""
        if "image" not in model_input:
            raise DataError(f"expected a column 'image' (base64 image bytes), "
                            f"got columns {list(model_input.columns)[:10]}")
        limits = serve_limits.limits()
        if len(model_input) > limits.max_rows:
            raise RequestTooLarge(f"{len(model_input)} images in one request; at most "
                                  f"{limits.max_rows} (serve.max_rows)")
        raw = (params or {}).get("min_score")
        try:
            min_score = None if raw is None else float(raw)
        except (TypeError, ValueError) as err:
            raise DataError("params.min_score must be a number") from err
        if min_score is not None and not 0 <= min_score <= 1:
            raise DataError("params.min_score must be within 0..1")
        predict = self.predict_images
        if self.meta.task in ("detect", "instance") and getattr(predict, "takes_min_score", False):
            # what the answer drops is never computed: a request's floor, else the default
            predict = partial(predict, min_score=DEFAULT_MIN_SCORE if min_score is None
                              else min_score)
        return predict_cells(predict, self.meta, list(model_input["image"]), min_score,
                             limits.max_pixels)


def _load_pyfunc(data_path: str) -> VisionModel:
    """MLflow's entry point (`loader_module`): data_path is the logged checkpoint folder."""
    return VisionModel(Path(data_path))
