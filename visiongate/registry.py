"""MLflow model registry edge: register candidates, read versions and aliases, check out
a version's files. Every candidate gets the alias `challenger`; `champion` and
`previous-champion` move only through visiongate/moves.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
from filelock import FileLock, Timeout
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from visiongate.errors import RegistryError
from visiongate.mlmodel import check_model_dir
from visiongate.tracking import process_tracking_uri
from visiongate.vocab import HEADLINE_METRICS

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
LOCK_TIMEOUT_S = 120
MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


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


@contextmanager
def alias_lock(uri: str) -> Iterator[None]:
    """Exclusive section for alias moves: a file lock beside a sqlite database. sqlite
    serialises single writes, but a move is read-then-write (read the champion, retire
    it, move the alias): unlocked, two promotions can both retire the same champion and
    one history entry is lost. Other stores (a tracking server) are not locked here."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    try:
        with FileLock(str(db.with_name(db.name + ".lock")), timeout=LOCK_TIMEOUT_S):
            yield
    except Timeout as err:
        raise RegistryError(f"{db}: an alias move held the lock for {LOCK_TIMEOUT_S} s") from err


def register(uri: str, name: str, model_uri: str, tags: dict[str, str],
             description: str = "") -> Version:
    """New version of `name` from a logged model (`models:/<model_id>` or `runs:/<run>/<path>`),
    tagged and aliased `challenger`."""
    client = MlflowClient(uri)
    try:
        client.create_registered_model(name, description=f"visiongate model {name}")
    except MlflowException as err:
        if "ALREADY_EXISTS" not in str(err.error_code):
            raise
    run_id = model_uri.split("/")[1] if model_uri.startswith("runs:/") else None
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    # A retried registration (the server dropped between creating the version and aliasing
    # it) finishes that version instead of creating a second one.
    latest = max(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version),
                 default=None)
    mv = latest if latest is not None and latest.source == model_uri and CHALLENGER not in \
        client.get_model_version(name, latest.version).aliases else None
    if mv is None:
        # the store resolves a logged model's location through the process-wide tracking URI
        with process_tracking_uri(uri):
            mv = client.create_model_version(name, source=model_uri, run_id=run_id, tags=tags,
                                             description=description, model_id=model_id)
    with alias_lock(uri):
        client.set_registered_model_alias(name, CHALLENGER, mv.version)
    return get(uri, name, str(mv.version))


def get(uri: str, name: str, version: str) -> Version:
    try:
        return _version(MlflowClient(uri).get_model_version(name, version))
    except MlflowException as err:
        if err.error_code in MISSING:
            raise RegistryError(f"no version {version} of registered model {name!r}") from err
        raise


def by_alias(uri: str, name: str, alias: str) -> Version | None:
    try:
        return _version(MlflowClient(uri).get_model_version_by_alias(name, alias))
    except MlflowException as err:
        if err.error_code in MISSING:
            return None
        raise


def resolve(uri: str, model_uri: str) -> Version:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` -> the registered version."""
    ref = model_uri.removeprefix("models:/")
    name, sep, alias = ref.partition("@")
    if not sep:
        name, _, version = ref.rpartition("/")
        if not name or not version.isdigit():
            raise RegistryError(f"{model_uri!r}: expected models:/NAME@ALIAS or "
                                "models:/NAME/VERSION")
        return get(uri, name, version)
    found = by_alias(uri, name, alias)
    if found is None:
        raise RegistryError(f"{model_uri!r}: no version of {name!r} has alias {alias!r}")
    return found


def checkout_model(uri: str, version: Version, cache_root: Path) -> Path:
    """Local copy of a version's MLflow model folder (per name and version under cache_root),
    checked before anything loads it: its MLmodel must be visiongate's own (mlmodel.py),
    else ModelError naming the version. Load a version only from here."""
    cache_root, label = Path(cache_root), f"{version.name} v{version.version}"
    dst = cache_root / f"{version.name}-v{version.version}"
    if dst.resolve().parent != cache_root.resolve():
        raise RegistryError(f"{label}: the model name cannot name a local folder")
    dst.mkdir(parents=True, exist_ok=True)
    source = MlflowClient(uri).get_model_version_download_uri(version.name, version.version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst),
                                                     tracking_uri=uri))
    check_model_dir(local, label)
    return local


def checkout(uri: str, version: Version, cache_root: Path) -> Path:
    """The checkpoint folder (meta.json + weights) of a checked local copy of the version
    (checkout_model): the pyfunc model's data folder."""
    return check_model_dir(checkout_model(uri, version, cache_root),
                           f"{version.name} v{version.version}")


def client_for(uri: str) -> MlflowClient:
    """The registry client for `uri` (visiongate/moves.py moves aliases with it)."""
    return MlflowClient(uri)


def set_aliases(client: MlflowClient, name: str, state: dict[str, str | None]) -> None:
    """Each alias to its version; None removes it (an alias already absent is fine)."""
    for alias, version in state.items():
        if version is None:
            try:
                client.delete_registered_model_alias(name, alias)
            except MlflowException as err:
                if err.error_code not in MISSING:
                    raise
        else:
            client.set_registered_model_alias(name, alias, version)


def tag_version(client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def list_models(uri: str, name: str | None = None) -> list[dict]:
    """Registered models with their versions (newest first), aliases, gate verdict and
    headline test metrics from each version's run."""
    client = MlflowClient(uri)
    try:
        found = [client.get_registered_model(name)] if name else client.search_registered_models()
    except MlflowException as err:
        if err.error_code in MISSING:
            raise RegistryError(f"no registered model {name!r}") from err
        raise
    out = []
    for model in sorted(found, key=lambda m: m.name):
        aliases: dict[str, list[str]] = {}
        for alias, number in model.aliases.items():
            aliases.setdefault(str(number), []).append(alias)
        versions = []
        for mv in client.search_model_versions(f"name='{model.name}'"):
            metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
            created = time.gmtime(mv.creation_timestamp / 1000)
            versions.append({
                "version": str(mv.version), "aliases": sorted(aliases.get(str(mv.version), [])),
                "created": time.strftime("%Y-%m-%d %H:%M", created),
                "gate": mv.tags.get("gate.passed", "?"), "run_id": mv.run_id,
                "metrics": {k: metrics[f"test/{k}"] for k in HEADLINE_METRICS
                            if f"test/{k}" in metrics}})
        versions.sort(key=lambda v: -int(v["version"]))
        out.append({"name": model.name, "versions": versions})
    return out


def find_version(uri: str, name: str, tags: dict[str, str]) -> Version | None:
    """The newest version of `name` whose tags include all of `tags`, or None."""
    client = MlflowClient(uri)
    try:
        found = client.search_model_versions(f"name='{name}'")
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    for mv in sorted(found, key=lambda v: int(v.version), reverse=True):
        if all(mv.tags.get(k) == v for k, v in tags.items()):
            return get(uri, name, str(mv.version))
    return None


def set_version_tags(uri: str, name: str, version: str, tags: dict[str, str]) -> None:
    tag_version(MlflowClient(uri), name, version, tags)
