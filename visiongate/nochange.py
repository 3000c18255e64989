"""Is there anything to retrain? Decided in about a second, before Prefect, MLflow or torch
is imported — by `visiongate retrain` and, first of all, by the retrain flow itself, so the
command line and the scheduled deployment reach the same answer the same way.

Nothing changed when all of these hold:
1. DVC says the stages that produce data/prepared/<dataset> are up to date (`dvc status`:
   their dependencies and params equal dvc.lock), and the exclusion list, if there is one,
   still has the md5 its `.dvc` file pins;
2. every file of every split re-hashes to what dvc.lock pins (versioning.verify);
3. every enabled model task has a registered version whose identity tags (data md5s,
   params hash, code hash, weights sha256, library versions; visiongate.lineage) equal
   this run's — read from the project's own MLflow sqlite store, read-only, with sqlite3
   (`registered`: the one place outside visiongate.registry that reads the registry, as
   importing MLflow alone takes seconds; tests/integration/test_retrain_flow.py checks
   that it answers what the flow's MLflow client answers).

Any doubt answers None, and the flow takes the full path (`dvc repro`, re-pinning, the
MLflow client): a stage to run, an edited or unreadable file, a store that is not the
project's sqlite file (a remote tracking server), a store this code cannot read.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from urllib.parse import unquote

from visiongate import versioning
from visiongate.config import Params
from visiongate.lineage import IDENTITY, identity, lineage_tags, params_hash
from visiongate.outcomes import Outcome
from visiongate.paths import Project, registry_name, store_uri

SQLITE = "sqlite:///"
CHAMPION = "champion"  # visiongate.registry.CHAMPION (not imported: it imports MLflow)


def check(project: Project, params: Params, store: str) -> list[Outcome] | None:
    """One "unchanged" Outcome per enabled model task when nothing changed, else None.
    `store`: the tracking URI the retrain would use."""
    db = _sqlite_file(store)
    if db is None or not db.is_file():
        return None
    try:
        md5s, excluded = _pinned_data(project, params.dataset)
        if md5s is None:
            return None
        outcomes = []
        for task, cfg in params.model_tasks().items():
            lineage = lineage_tags(project.root, params.dataset, md5s, params_hash(cfg),
                                   cfg.weights_file(), excluded)
            found = registered(db, registry_name(params.dataset, task), identity(lineage))
            if found is None:
                return None
            outcomes.append(Outcome(registry_name(params.dataset, task), "unchanged",
                                    version=found[0], champion_version=found[1]))
        return outcomes
    except Exception:  # noqa: BLE001 — DVC's, sqlite's, a bad file's: the full path decides
        return None   # and reports it in its own words; this shortcut never fails a retrain


def own_store(project: Project, params: Params) -> str | None:
    """The project's own MLflow store when the retrain would use it — MLFLOW_TRACKING_URI
    unset, or naming this project's `visiongate up` server, which serves that store — else
    None (a remote tracking server: the flow asks it)."""
    own = store_uri(project.root, params.mlflow.tracking_uri)
    current = os.environ.get("MLFLOW_TRACKING_URI")
    if current and current != own:
        from visiongate.stack import running_url

        if current != running_url(project.root, "mlflow"):
            return None
    return own


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI, else None."""
    if not uri.startswith(SQLITE):
        return None
    return Path(unquote(uri[len(SQLITE):].split("?", 1)[0]))


def _pinned_data(project: Project, dataset: str) -> tuple[dict | None, str | None]:
    """(split md5s, exclusion-list md5 or None) when DVC's pins still hold; (None, None)
    when something is out of date or edited."""
    if not versioning.up_to_date(project.root, dataset):
        return None, None
    excluded = _pinned_exclusions(project, dataset)
    if excluded is False:
        return None, None
    md5s = versioning.split_md5s(project.root, dataset)
    versioning.verify(project.root, dataset, md5s)  # re-hash: DataError when edited
    return md5s, excluded


def _pinned_exclusions(project: Project, dataset: str) -> str | None | bool:
    """The exclusion list's pinned md5 (None: no list, or no entries); False when it was
    edited since it was pinned."""
    from visiongate.datasets import exclude

    path = project.exclude_list(dataset)
    if not path.exists():
        return None
    pinned = versioning.tracked_md5(project.root, path.relative_to(project.root).as_posix())
    if pinned is None or hashlib.md5(path.read_bytes()).hexdigest() != pinned:
        return False
    return pinned if exclude.read_list(path) else None


def registered(db: Path, name: str, wanted: dict[str, str | None]) -> tuple[str, str | None] | None:
    """(version, champion version) of the newest live version of `name` whose identity tags
    equal `wanted` (None: the tag must be absent), as registry.find_version matches them;
    None when there is none."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
        versions = [str(v) for (v,) in con.execute(
            "SELECT version FROM model_versions WHERE name = ? AND "
            "current_stage != 'Deleted_Internal' ORDER BY version DESC", (name,))]
        tags: dict[str, dict[str, str]] = {v: {} for v in versions}
        for version, key, value in con.execute(
                "SELECT version, key, value FROM model_version_tags WHERE name = ?", (name,)):
            tags.get(str(version), {})[key] = value
        champion = con.execute("SELECT version FROM registered_model_aliases WHERE name = ? "
                               "AND alias = ?", (name, CHAMPION)).fetchone()
    for version in versions:
        if all(tags[version].get(k) == wanted[k] for k in IDENTITY):
            return version, str(champion[0]) if champion else None
    return None
