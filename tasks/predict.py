"""Batch prediction task: a folder of images through a checkpoint, results to a folder."""

from pathlib import Path

from prefect import task

from visiongate import serving


@task
def predict_folder(checkpoint: str, images_dir: str, out_dir: str, min_score: float,
                   model: str) -> dict:
    """predictions.json + overlays/ + skipped.csv in out_dir; returns counts and skipped files."""
    return serving.predict_folder(Path(checkpoint), Path(images_dir), Path(out_dir), min_score,
                                  model)
