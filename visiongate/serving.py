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
    {"error": "..."}                                                      # unreadable image

Boxes are xyxy pixels, labels the COCO category ids 1..K; `mask` appears on instance
detections only; a semantic answer lists each predicted class (background left out) as
one COCO RLE mask (`pycocotools.mask.decode` turns it back into an array). Detections
below `min_score` are dropped (default 0.25; evaluation uses the config's lower `conf`).

The logged model is this module as MLflow `loader_module` with the checkpoint folder
(meta.json + weights) as its data: nothing is pickled, and loading runs the family's own
predict (`visiongate.models`). tracking.log_model writes it.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from visiongate import geometry, models
from visiongate.errors import DataError, NotFound

DEFAULT_MIN_SCORE = 0.25
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}

Predictor = Callable[[list[Path]], list]


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


def readable_image(data: bytes, decode: bool = False) -> tuple[str, tuple[int, int]]:
    """(file suffix, (width, height)) of encoded image bytes; DataError if unreadable.

    By default the header and PNG chunk checksums are checked (`verify`: a truncated PNG
    fails, 50× cheaper than decoding a 640 px PNG twice per request); decode=True
    decodes every pixel, which also catches a truncated JPEG.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            suffix, size = SUFFIX.get(im.format, ""), im.size
            if decode:
                im.load()
            else:
                im.verify()
            return suffix, size
    # ImportError: once ultralytics is imported, Image.open answers an unknown format by
    # importing an optional HEIF plugin (visiongate keeps ultralytics offline: no install)
    except (Image.UnidentifiedImageError, ImportError) as err:
        raise DataError("not a readable image (unknown format)") from err
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"not a readable image ({err})") from err


def _decode(cell: Any) -> bytes:
    if isinstance(cell, bytes):
        return cell
    try:
        return base64.b64decode(str(cell))  # not validated: junk fails as an image
    except (binascii.Error, ValueError) as err:
        raise DataError(f"`image` is not base64 text ({err})") from err


def predict_cells(predict: Predictor, meta: models.CheckpointMeta, cells: list,
                  min_score: float) -> list[dict]:
    """Records for base64 cells; a cell that is not a readable image gets {"error": ...}."""
    records: list[dict] = [{} for _ in cells]
    with tempfile.TemporaryDirectory(prefix="visiongate-serve-") as tmp:
        paths, sizes, slots = [], [], []
        for i, cell in enumerate(cells):
            try:
                data = _decode(cell)
                suffix, size = readable_image(data)
            except ValueError as err:
                records[i] = {"error": f"image {i}: {err}"}
                continue
            path = Path(tmp) / f"{i:06d}{suffix or '.png'}"
            if suffix:
                path.write_bytes(data)
            else:  # a format the model readers may not know: hand them a PNG
                with Image.open(io.BytesIO(data)) as im:
                    im.convert("RGB").save(path)
            paths.append(path)
            sizes.append(size)
            slots.append(i)
        for i, size, prediction in zip(slots, sizes, predict(paths) if paths else []):
            records[i] = to_record(meta, prediction, size, min_score)
    return records


class VisionModel:
    """The pyfunc model of a visiongate checkpoint, any family (weights loaded once)."""

    def __init__(self, checkpoint: Path):
        self.meta = models.CheckpointMeta.read(Path(checkpoint))
        self.predict_images = predictor(Path(checkpoint))

    def predict(self, model_input, params: dict | None = None) -> list[dict]:
        """model_input: a pandas DataFrame with column `image`; one record per row."""
        if "image" not in model_input:
            raise DataError(f"expected a column 'image' (base64 image bytes), "
                            f"got columns {list(model_input.columns)}")
        min_score = float((params or {}).get("min_score", DEFAULT_MIN_SCORE))
        return predict_cells(self.predict_images, self.meta, list(model_input["image"]), min_score)


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


def predict_folder(checkpoint: Path, images_dir: Path, out_dir: Path, min_score: float,
                   model: str) -> dict:
    """Predict every readable image under images_dir: `predictions.json` (COCO: images,
    categories and results as annotations), `overlays/*.png`, `skipped.csv`."""
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    paths, skipped = scan_images(images_dir)
    meta, predict = models.CheckpointMeta.read(Path(checkpoint)), predictor(Path(checkpoint))
    (out_dir / "overlays").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for start in range(0, len(paths), BATCH):
        chunk = paths[start:start + BATCH]
        for image_id, path, prediction in zip(range(start + 1, start + len(chunk) + 1), chunk,
                                              predict(chunk)):
            drawn = overlay(path, meta, prediction, min_score)
            rel = path.relative_to(images_dir).as_posix()
            flat = rel.replace("/", "__")  # sub/a.jpg -> sub__a.jpg.png
            drawn.save(out_dir / "overlays" / (flat if flat.endswith(".png") else f"{flat}.png"))
            record = to_record(meta, prediction, drawn.size, min_score)
            images.append({"id": image_id, "file_name": rel, "width": drawn.width,
                           "height": drawn.height})
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
