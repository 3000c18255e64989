"""MLflow model registry edge: register candidates, read and move aliases.

Aliases: every candidate gets `challenger`; `champion` moves only on promotion, and the
version it leaves keeps `previous-champion`, so a rollback is one alias move.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"


@dataclass(frozen=True)
class Version:
    name: str
    version: str
    run_id: str
    source: str
    aliases: tuple[str, ...]
    tags: dict[str, str]


def _version(mv) -> Version:
    return Version(mv.name, str(mv.version), mv.run_id, mv.source, tuple(mv.aliases), dict(mv.tags))


def register(uri: str, name: str, run_id: str, artifact_path: str, tags: dict[str, str],
             description: str = "") -> Version:
    """New version of `name` from the run's artifact folder, tagged, aliased `challenger`."""
    client = MlflowClient(uri)
    try:
        client.create_registered_model(name, description=f"visiongate model {name}")
    except MlflowException as err:
        if "RESOURCE_ALREADY_EXISTS" not in str(err.error_code):
            raise
    mv = client.create_model_version(name, source=f"runs:/{run_id}/{artifact_path}", run_id=run_id,
                                     tags=tags, description=description)
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    return get(uri, name, str(mv.version))


def get(uri: str, name: str, version: str) -> Version:
    return _version(MlflowClient(uri).get_model_version(name, version))


def by_alias(uri: str, name: str, alias: str) -> Version | None:
    try:
        return _version(MlflowClient(uri).get_model_version_by_alias(name, alias))
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def resolve(uri: str, model_uri: str) -> Version:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` -> the registered version."""
    ref = model_uri.removeprefix("models:/")
    name, sep, alias = ref.partition("@")
    if not sep:
        name, _, version = ref.rpartition("/")
        if not name or not version.isdigit():
            raise ValueError(f"{model_uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
        return get(uri, name, version)
    found = by_alias(uri, name, alias)
    if found is None:
        raise ValueError(f"{model_uri!r}: no version of {name!r} has alias {alias!r}")
    return found


def checkout(uri: str, version: Version, cache_root: Path) -> Path:
    """Local copy of a version's checkpoint folder, cached per name and version."""
    dst = Path(cache_root) / f"{version.name}-v{version.version}"
    dst.mkdir(parents=True, exist_ok=True)
    return Path(MlflowClient(uri).download_artifacts(version.run_id, "model", str(dst)))


def promote(uri: str, name: str, version: str, reason: str) -> Version:
    """Move `champion` to `version`; the replaced champion becomes `previous-champion`."""
    client = MlflowClient(uri)
    current = by_alias(uri, name, CHAMPION)
    if current is not None and current.version != version:
        client.set_registered_model_alias(name, PREVIOUS, current.version)
        client.set_model_version_tag(name, current.version, "retired_at", _now())
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "promoted_at", _now())
    client.set_model_version_tag(name, version, "promotion_reason", reason)
    return get(uri, name, version)


def set_version_tags(uri: str, name: str, version: str, tags: dict[str, str]) -> None:
    client = MlflowClient(uri)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
