"""Deployment artifacts: export the candidate for CPU serving and check each against PyTorch
on the pinned test split (visiongate.export)."""

from pathlib import Path

from prefect import get_run_logger, task

from visiongate.config import ServeConfig
from visiongate.export import Deployment


@task
def export_for_serving(checkpoint: str, split_dir: str, metrics: dict,
                       cfg: ServeConfig) -> Deployment:
    """Export, parity-check and choose the serving runtime (meta.json records it)."""
    from visiongate.export import prepare

    deployment = prepare(Path(checkpoint), Path(split_dir), metrics, tuple(cfg.export),
                         cfg.parity_tolerance, cfg.runtime)
    logger = get_run_logger()
    for check in deployment.checks:
        if not check.passed:
            logger.warning("%s artifact refused: %s", check.runtime, check.problem)
    logger.info("serving runtime: %s", deployment.runtime)
    return deployment
