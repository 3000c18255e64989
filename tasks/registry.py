"""MLflow registry tasks: retried, since a tracking server can blink."""

import tempfile
from pathlib import Path

from prefect import task

from tasks.tracking import IO
from visiongate import models, registry, tracking


@task(**IO)
def champion_checkpoint(uri: str, name: str, cache_dir: str) -> tuple[str, str] | None:
    """(version, local checkpoint dir under cache_dir) of the current champion, or None."""
    champion = registry.by_alias(uri, name, registry.CHAMPION)
    if champion is None:
        return None
    return champion.version, str(registry.checkout(uri, champion, Path(cache_dir)))


@task(**IO)
def log_model(uri: str, run_id: str, checkpoint: str) -> str:
    """Log what serving needs from the checkpoint under the run's `model` artifact path."""
    with tempfile.TemporaryDirectory(prefix="visiongate-") as tmp:
        tracking.log_artifacts(uri, run_id, models.export_checkpoint(Path(checkpoint), Path(tmp)),
                               "model")
    return "model"


@task(**IO)
def register(uri: str, name: str, run_id: str, tags: dict) -> str:
    return registry.register(uri, name, run_id, "model", tags).version


@task(**IO)
def promote(uri: str, name: str, version: str, reason: str) -> None:
    registry.promote(uri, name, version, reason)
