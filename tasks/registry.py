"""MLflow registry tasks: retried, since a tracking server can blink."""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect import get_client, runtime, task
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists
from prefect.settings import get_current_settings
from prefect.transactions import get_transaction

from tasks.tracking import IO
from visiongate import moves, registry, tracking
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


@contextmanager
def shared_alias_lock(uri: str, name: str) -> Iterator[None]:
    """Alias moves of `name` through a tracking server, one at a time across every process
    that talks to the same Prefect server (workers, `visiongate promote`): a global
    concurrency limit `visiongate-aliases-<name>` of one slot, created on first use. Its
    lease frees the slot when a holder dies. A sqlite store is serialised by
    registry.alias_lock instead; without a Prefect server (PREFECT_API_URL) there is no
    lock shared beyond one machine to take (README "Beyond one machine")."""
    if uri.startswith("sqlite:") or not get_current_settings().api.url:
        yield
        return
    limit = "visiongate-aliases-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)
    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=limit,
                                                                                limit=1))
        except ObjectAlreadyExists:
            pass
    with concurrency(limit, occupy=1, timeout_seconds=registry.LOCK_TIMEOUT_S, strict=True,
                     lease_duration=60):
        yield


@task(**IO)
def promote(uri: str, name: str, version: str, reason: str) -> None:
    """Gate pass: move `champion`, recording the Prefect flow run that moved it. Inside a
    transaction, the aliases it found are kept so that a rollback puts them back."""
    flow_run = runtime.flow_run
    by = f"flow run {flow_run.name} ({flow_run.id})" if flow_run.id else None
    with shared_alias_lock(uri, name):
        move = moves.promote(uri, name, version, reason, by=by)
    if (txn := get_transaction()) is not None:
        txn.set("undo", {"uri": uri, "name": name, "before": move.before, "version": version})


@promote.on_rollback
def _put_back(txn) -> None:
    """A step after the promotion failed: the champion before it is champion again."""
    undo = txn.get("undo", None)
    if undo:
        with shared_alias_lock(undo["uri"], undo["name"]):
            moves.restore(undo["uri"], undo["name"], undo["before"], undo["version"],
                          "a step after the promotion failed; its transaction was rolled back")


@task(**IO)
def versions_on_data(uri: str, name: str, md5s: dict[str, str]) -> bool:
    """Whether some registered version of `name` was trained and tested on these split md5s."""
    tags = {f"data.md5.{split}": md5 for split, md5 in md5s.items()}
    return registry.find_version(uri, name, tags) is not None
