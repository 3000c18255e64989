"""Batch prediction task: a folder of images through a checkpoint, results to a folder."""

from pathlib import Path

from prefect import task

from visiongate import batch_predict


@task
def predict_folder(checkpoint: str, images_dir: str, out_dir: str, min_score: float | None,
                   model: str) -> dict:
    """predictions.json (or .csv) + overlays/ + skipped.csv in out_dir; counts and skips."""
    return batch_predict.predict_folder(Path(checkpoint), Path(images_dir), Path(out_dir),
                                        min_score, model)
