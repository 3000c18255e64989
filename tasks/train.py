from pathlib import Path

from prefect import task

from visiongate import models, tracking


@task
def train_model(cfg, data_root: str, out_dir: str, tracking_uri: str, run_id: str) -> str:
    """Train one candidate, streaming per-epoch metrics to the flow's MLflow run; a model
    started from `weights:` also gets tags `weights.*` saying what it took from the file."""
    from visiongate.models.local_weights import WeightsReport  # torch: only when training

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        tracking.log_metrics(tracking_uri, run_id, metrics, step=epoch)

    checkpoint = models.train(cfg, Path(data_root), Path(out_dir), on_epoch)
    report = WeightsReport.read(Path(out_dir)) if cfg.weights else None
    if report:
        tracking.set_tags(tracking_uri, run_id, report.tags())
    return str(checkpoint)


@task
def augment_preview(cfg, split_dir: str, out_png: str) -> str | None:
    """A grid of augmented training samples with their boxes/masks, to check the pipeline
    keeps labels aligned; None when the task has no augmentations configured."""
    if not cfg.augment:
        return None
    from visiongate import augment  # albumentations imports torch: only when previewing

    return str(augment.preview_grid(cfg, Path(split_dir), Path(out_png)))
