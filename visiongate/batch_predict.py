"""Batch prediction: a folder of images through a checkpoint -> results, overlays, skips.

Detection and segmentation write `predictions.json` (COCO: images, categories and the
results as annotations: bbox xywh, score, RLE segmentation for masks); classification
writes `predictions.csv` (one row per image: its labels, the top-1 score and the top-k
classes with probabilities). Both write `overlays/*.png` and `skipped.csv` (files that are
not readable images: reported, not fatal).
"""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from visiongate import geometry, models, serving, upright
from visiongate.cells import readable_image
from visiongate.errors import NotFound
from visiongate.serving import CLASSIFY_TASKS, _class_name, to_record


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


def overlay(path: Path, meta: models.CheckpointMeta, prediction: Any,
            min_score: float | None) -> Image.Image:
    """The image with predicted masks and boxes (class name and score) drawn on it; for a
    classifier, its labels written in the corner."""
    if meta.task in CLASSIFY_TASKS:
        return _caption(path, to_record(meta, prediction, (0, 0), min_score))
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


def _caption(path: Path, record: dict) -> Image.Image:
    with Image.open(path) as im:
        image = im.convert("RGB")
    text = ", ".join(f"{x['class_name']} {x['score']:.2f}" for x in record["labels"]) or \
        f"uncertain ({record['top_k'][0]['class_name']} {record['top_k'][0]['score']:.2f})"
    draw = ImageDraw.Draw(image)
    box = draw.textbbox((2, 2), text)
    draw.rectangle(box, fill="black")
    draw.text((2, 2), text, fill="white")
    return image


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


def predict_folder(checkpoint: Path, images_dir: Path, out_dir: Path, min_score: float | None,
                   model: str) -> dict:
    """Predict every readable image under images_dir: `predictions.json` (detection,
    segmentation) or `predictions.csv` (classification), `overlays/*.png`, `skipped.csv`.
    min_score None: the model's own operating point (0.25 for detections)."""
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    paths, skipped = scan_images(images_dir)
    meta = models.CheckpointMeta.read(Path(checkpoint))
    predict = serving.predictor(Path(checkpoint))
    (out_dir / "overlays").mkdir(parents=True, exist_ok=True)
    overlay_files = overlay_names([p.relative_to(images_dir).as_posix() for p in paths])
    images, annotations, rows = [], [], []
    for start in range(0, len(paths), BATCH):
        chunk = paths[start:start + BATCH]
        with tempfile.TemporaryDirectory(prefix="visiongate-predict-") as tmp:
            # an EXIF-rotated photo, 16-bit, CMYK ...: the upright 8-bit pixels it trained on
            shown = [upright.displayed_file(p, Path(tmp) / str(i)) for i, p in enumerate(chunk)]
            predictions = predict(shown)
            drawings = [overlay(p, meta, pr, min_score)
                        for p, pr in zip(shown, predictions, strict=True)]
        for image_id, path, prediction, drawn in zip(range(start + 1, start + len(chunk) + 1),
                                                     chunk, predictions, drawings, strict=True):
            rel = path.relative_to(images_dir).as_posix()
            drawn.save(out_dir / "overlays" / overlay_files[rel])
            record = to_record(meta, prediction, drawn.size, min_score)
            images.append({"id": image_id, "file_name": rel, "width": drawn.width,
                           "height": drawn.height, "overlay": f"overlays/{overlay_files[rel]}"})
            if meta.task in CLASSIFY_TASKS:
                rows.append(_csv_row(rel, record))
            else:
                annotations += _coco_annotations(record, image_id)
    if meta.task in CLASSIFY_TASKS:
        with open(out_dir / "predictions.csv", "w", newline="") as f:
            csv.writer(f).writerows([("file", "labels", "score", "top_k"), *rows])
    else:
        for i, ann in enumerate(annotations, 1):
            ann["id"] = i
        names = meta.class_names
        (out_dir / "predictions.json").write_text(json.dumps({
            "info": {"model": model, "task": meta.task, "min_score": min_score},
            "images": images,
            "categories": [{"id": k, "name": n} for k, n in enumerate(names, 1)],
            "annotations": annotations}))
    with open(out_dir / "skipped.csv", "w", newline="") as f:
        csv.writer(f).writerows([("file", "reason"), *skipped])
    return {"predicted": len(images), "detections": len(annotations) or len(rows),
            "skipped": skipped, "out_dir": str(out_dir)}


def _csv_row(rel: str, record: dict) -> tuple[str, str, str, str]:
    """file, labels (;-separated names, empty when rejected as uncertain), top-1 score,
    top-k as name:probability;..."""
    return (rel, ";".join(x["class_name"] for x in record["labels"]),
            f"{record['top_k'][0]['score']:.5f}",
            ";".join(f"{x['class_name']}:{x['score']:.5f}" for x in record["top_k"]))
