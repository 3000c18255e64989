from pathlib import Path

from prefect import task

from visiongate.evaluate import evaluate, evaluate_corrupted


@task
def evaluate_model(checkpoint: str, split_dir: str) -> dict[str, float]:
    """Metrics of a checkpoint on one split (the pinned test split in the retrain flow)."""
    return evaluate(Path(checkpoint), Path(split_dir))


@task
def evaluate_robustness(checkpoint: str, split_dir: str, cache_dir: str,
                        corruptions: dict[str, int]) -> dict[str, dict[str, float]]:
    """Metrics on albumentations-corrupted copies of the split (low light, blur, noise, fog)."""
    return evaluate_corrupted(Path(checkpoint), Path(split_dir), Path(cache_dir), corruptions)
