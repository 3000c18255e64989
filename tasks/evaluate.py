from pathlib import Path

from prefect import task

from visiongate.evaluate import evaluate


@task
def evaluate_model(checkpoint: str, split_dir: str) -> dict[str, float]:
    """Metrics of a checkpoint on one split (the pinned test split in the retrain flow)."""
    return evaluate(Path(checkpoint), Path(split_dir))
