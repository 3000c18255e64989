"""Batch prediction with a registered model: images in, predictions and overlays out.

    visiongate predict --model models:/shapes-detect@champion IMAGES_DIR --out DIR

Writes DIR/predictions.json (COCO: images with their file names, categories, and the
results as annotations: bbox xywh, score, RLE segmentation for masks) — or, for a
classifier, DIR/predictions.csv (file, labels, score, top_k) —, DIR/overlays/*.png and
DIR/skipped.csv (files that are not readable images: reported, not fatal).
"""

from __future__ import annotations

from pathlib import Path

import flows  # noqa: F401  (Prefect environment defaults before prefect is imported)
from prefect import flow, get_run_logger

from tasks.predict import predict_folder
from tasks.registry import checkout
from visiongate import registry, tracking
from visiongate.config import load_params
from visiongate.paths import Project


@flow(name="predict")
def predict(model_uri: str, images_dir: str, out_dir: str, root: str = ".",
            params_file: str = "params.yaml", min_score: float | None = None) -> dict:
    """Predict every image under images_dir with a registered version (alias or number)."""
    project = Path(root).resolve()  # min_score None: the model's own (0.25 for detections)
    uri = tracking.tracking_uri(project, load_params(project / params_file).mlflow)
    version = registry.resolve(uri, model_uri)  # a wrong name or alias fails here, not retried
    checkpoint = checkout(uri, version.name, version.version, str(Project(project).champions))
    result = predict_folder(checkpoint, str(Path(images_dir).resolve()),
                            str(Path(out_dir).resolve()), min_score,
                            f"{version.name}/{version.version}")
    logger = get_run_logger()
    for file, reason in result["skipped"]:
        logger.warning("skipped %s: %s", file, reason)
    logger.info("%s v%s: %d images, %d predictions, %d skipped -> %s", version.name,
                version.version, result["predicted"], result["detections"],
                len(result["skipped"]), result["out_dir"])
    return result
