"""MLflow registry tasks: retried, since a tracking server can blink."""

from pathlib import Path

from prefect import runtime, task

from tasks.tracking import IO
from visiongate import registry, tracking
from visiongate.datasets.coco import load_split


@task(**IO)
def champion_checkpoint(uri: str, name: str, cache_dir: str) -> tuple[str, str] | None:
    """(version, local checkpoint dir under cache_dir) of the current champion, or None."""
    champion = registry.by_alias(uri, name, registry.CHAMPION)
    if champion is None:
        return None
    return champion.version, str(registry.checkout(uri, champion, Path(cache_dir)))


@task(**IO)
def alias_version(uri: str, name: str, alias: str) -> str | None:
    """The version number holding `alias`, or None."""
    found = registry.by_alias(uri, name, alias)
    return found.version if found else None


@task(**IO)
def unchanged_version(uri: str, name: str, identity: dict) -> tuple[str, str | None] | None:
    """(version, current champion version) when a registered version already has this
    identity (same data md5s, params, code and libraries), else None."""
    found = registry.find_version(uri, name, identity)
    if found is None:
        return None
    champion = registry.by_alias(uri, name, registry.CHAMPION)
    return found.version, champion.version if champion else None


@task(**IO)
def checkout(uri: str, name: str, version: str, cache_dir: str) -> str:
    """Local checkpoint dir (under cache_dir) of a registered version."""
    return str(registry.checkout(uri, registry.get(uri, name, version), Path(cache_dir)))


@task(**IO)
def log_model(uri: str, run_id: str, checkpoint: str, example_split: str) -> str:
    """Log the checkpoint as the run's pyfunc model, the split's first image as input
    example; returns the model URI to register (`models:/<model_id>`)."""
    split = load_split(Path(example_split))
    return tracking.log_model(uri, run_id, Path(checkpoint), split.image_path(split.images[0]))


@task(**IO)
def register(uri: str, name: str, model_uri: str, tags: dict) -> str:
    return registry.register(uri, name, model_uri, tags).version


@task(**IO)
def promote(uri: str, name: str, version: str, reason: str) -> None:
    """Gate pass: move `champion`, recording the Prefect flow run that moved it."""
    flow_run = runtime.flow_run
    by = f"flow run {flow_run.name} ({flow_run.id})" if flow_run.id else None
    registry.promote(uri, name, version, reason, by=by)


@task(**IO)
def versions_on_data(uri: str, name: str, md5s: dict[str, str]) -> bool:
    """Whether some registered version of `name` was trained and tested on these split md5s."""
    tags = {f"data.md5.{split}": md5 for split, md5 in md5s.items()}
    return registry.find_version(uri, name, tags) is not None
