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
    {"error": "image i: ...", "reason": "not_base64" | "unreadable" | "too_large" | "failed"}

A bad row (not base64, undecodable, over `serve.max_pixels` by its header) answers an error
record and never fails the others: predict raises only for the whole request (no `image`
column, more rows than `serve.max_rows`; limits from visiongate.serve_limits).

Boxes are xyxy pixels, labels the COCO category ids 1..K; `mask` appears on instance
detections only; a semantic answer lists each predicted class (background left out) as
one COCO RLE mask (`pycocotools.mask.decode` turns it back into an array). Detections
below `min_score` are dropped (default 0.25; evaluation uses the config's lower `conf`).

The logged model is this module as MLflow `loader_module` with the checkpoint folder
(meta.json + weights) as its data: no Python object is pickled by MLflow, and loading runs
the family's own predict (`visiongate.models`; ultralytics weights, which are pickles, only
through its safe loading). tracking.log_model writes it; visiongate loads a registered
version only after checking that its MLmodel is this one (visiongate.mlmodel).
"""

from __future__ import annotations

import base64
import csv
import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from visiongate import geometry, models, serve_limits
from visiongate.cells import SUFFIX, RowRefused, batches, readable_image, stage  # noqa: F401
from visiongate.errors import DataError, NotFound, RequestTooLarge

DEFAULT_MIN_SCORE = 0.25

Predictor = Callable[[list[Path]], list]
log = logging.getLogger(__name__)


def predictor(checkpoint: Path) -> Predictor:
    """`image_paths -> predictions` for a checkpoint, its weights loaded once."""
    return models.load(Path(checkpoint))


def encode_image(path: Path) -> str:
    """The request cell for an image file: its bytes as base64 text."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _class_name(meta: models.CheckpointMeta, label: int) -> str:
    """Category id k -> its class name (a class may be called "background" like any other)."""
    if 0 < label <= len(meta.class_names):
        return meta.class_names[label - 1]
    return "background" if label == 0 else str(label)


def to_record(meta: models.CheckpointMeta, prediction: Any, size: tuple[int, int],
              min_score: float) -> dict:
    """One image's prediction (the models interface's numpy form) as a JSON-friendly dict."""
    width, height = size
    record: dict[str, Any] = {"width": width, "height": height}
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
                 size: tuple[int, int], min_score: float) -> dict:
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
                   min_score: float) -> dict[int, dict]:
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
                  min_score: float, max_pixels: int | None = None) -> list[dict]:
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
        try:
            min_score = float((params or {}).get("min_score", DEFAULT_MIN_SCORE))
        except (TypeError, ValueError) as err:
            raise DataError("params.min_score must be a number") from err
        return predict_cells(self.predict_images, self.meta, list(model_input["image"]),
                             min_score, limits.max_pixels)


def _load_pyfunc(data_path: str) -> VisionModel:
    """MLflow's entry point (`loader_module`): data_path is the logged checkpoint folder."""
    return VisionModel(Path(data_path))


# --- batch prediction: a folder of images -> COCO predictions + overlays -------------

PALETTE = ("red", "lime", "blue", "yellow", "magenta", "cyan", "orange", "purple", "white")
BATCH = 32


def scan_images(images_dir: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Readable image files under images_dir (recursive, sorted) and (file, reason) for
    every other file, which batch prediction reports and skips."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise NotFound(f"{images_dir}: no such folder of images")
    readable, skipped = [], []
    for path in sorted(p for p in images_dir.rglob("*") if p.is_file()):
        try:
            readable_image(path.read_bytes(), decode=True)  # a batch can afford the decode
            readable.append(path)
        except ValueError as err:
            skipped.append((str(path.relative_to(images_dir)), str(err)))
    return readable, skipped


def _coco_annotations(record: dict, image_id: int) -> list[dict]:
    """COCO results (bbox xywh; segmentation as RLE) for one image's record."""
    out, detections = [], record.get("detections", [])
    xywh = geometry.xyxy_to_xywh([det["box"] for det in detections]).tolist()
    for det, (x, y, w, h) in zip(detections, xywh, strict=True):
        ann = {"image_id": image_id, "category_id": det["label"], "score": det["score"],
               "bbox": [x, y, round(w, 2), round(h, 2)], "area": round(w * h, 2),
               "iscrowd": 0}
        out.append({**ann, "segmentation": det["mask"]} if "mask" in det else ann)
    for seg in record.get("segments", []):
        bbox = mask_utils.toBbox({**seg["mask"], "counts": seg["mask"]["counts"].encode()})
        out.append({"image_id": image_id, "category_id": seg["label"], "segmentation": seg["mask"],
                    "area": seg["pixels"], "bbox": [float(v) for v in bbox], "iscrowd": 0})
    return out


def overlay(path: Path, meta: models.CheckpointMeta, prediction: Any, min_score: float) -> Image.Image:
    """The image with predicted masks and boxes (class name and score) drawn on it."""
    import torch
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    with Image.open(path) as im:
        image = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
    if meta.task == "segment":
        labels = [int(k) for k in np.unique(prediction) if k != 0]
        masks, boxes, captions = [prediction == k for k in labels], None, []
    else:
        keep = np.flatnonzero(prediction["scores"] >= min_score)
        labels = [int(k) for k in prediction["labels"][keep]]
        masks = list(prediction["masks"][keep]) if "masks" in prediction else []
        boxes = torch.as_tensor(prediction["boxes"][keep], dtype=torch.float32)
        captions = [f"{_class_name(meta, k)} {s:.2f}"
                    for k, s in zip(labels, prediction["scores"][keep])]
    colors = [PALETTE[(k - 1) % len(PALETTE)] for k in labels]
    if len(masks):
        image = draw_segmentation_masks(image, torch.from_numpy(np.stack(masks)), alpha=0.45,
                                        colors=colors)
    if boxes is not None and len(boxes):
        image = draw_bounding_boxes(image, boxes, labels=captions, colors=colors, width=2)
    return Image.fromarray(image.permute(1, 2, 0).numpy())


def overlay_names(rels: list[str]) -> dict[str, str]:
    """Image path (relative, posix) -> its overlay file: `sub/a.jpg` -> `sub__a.jpg.png`;
    a name already taken (`sub__a.jpg` beside `sub/a.jpg`) gets '_' prefixes until unique."""
    names, used = {}, set()
    for rel in rels:
        flat = rel.replace("/", "__")
        name = flat if flat.endswith(".png") else f"{flat}.png"
        while name.lower() in used:  # lower: case-insensitive file systems collide too
            name = f"_{name}"
        used.add(name.lower())
        names[rel] = name
    return names


def predict_folder(checkpoint: Path, images_dir: Path, out_dir: Path, min_score: float,
                   model: str) -> dict:
    """Predict every readable image under images_dir: `predictions.json` (COCO: images,
    categories and results as annotations), `overlays/*.png`, `skipped.csv`."""
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    paths, skipped = scan_images(images_dir)
    meta, predict = models.CheckpointMeta.read(Path(checkpoint)), predictor(Path(checkpoint))
    (out_dir / "overlays").mkdir(parents=True, exist_ok=True)
    overlay_files = overlay_names([p.relative_to(images_dir).as_posix() for p in paths])
    images, annotations = [], []
    for start in range(0, len(paths), BATCH):
        chunk = paths[start:start + BATCH]
        for image_id, path, prediction in zip(range(start + 1, start + len(chunk) + 1), chunk,
                                              predict(chunk)):
            drawn = overlay(path, meta, prediction, min_score)
            rel = path.relative_to(images_dir).as_posix()
            drawn.save(out_dir / "overlays" / overlay_files[rel])
            record = to_record(meta, prediction, drawn.size, min_score)
            images.append({"id": image_id, "file_name": rel, "width": drawn.width,
                           "height": drawn.height, "overlay": f"overlays/{overlay_files[rel]}"})
            annotations += _coco_annotations(record, image_id)
    for i, ann in enumerate(annotations, 1):
        ann["id"] = i
    names = meta.class_names
    (out_dir / "predictions.json").write_text(json.dumps({
        "info": {"model": model, "task": meta.task, "min_score": min_score},
        "images": images, "categories": [{"id": k, "name": n} for k, n in enumerate(names, 1)],
        "annotations": annotations}))
    with open(out_dir / "skipped.csv", "w", newline="") as f:
        csv.writer(f).writerows([("file", "reason"), *skipped])
    return {"predicted": len(images), "detections": len(annotations), "skipped": skipped,
            "out_dir": str(out_dir)}
