"""Where a model came from: data md5s, code commit, params hash, library versions."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import BaseModel

LIBRARIES = ("visiongate", "torch", "torchvision", "ultralytics", "mlflow", "dvc", "prefect",
             "albumentations")


def git_state(root: Path) -> dict[str, str]:
    """Commit of the project tree and whether it had uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              timeout=30).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    return {"git.commit": commit or "unknown", "git.dirty": str(dirty).lower() if commit else "unknown"}


def code_hash() -> str:
    """sha256 (16 hex) of the running visiongate, flows and tasks sources: "the code", with
    or without git, so a retrain can tell whether anything it runs has changed."""
    digest = hashlib.sha256()
    for package in ("visiongate", "flows", "tasks"):
        spec = importlib.util.find_spec(package)  # located, not imported
        if spec is None or spec.origin is None:
            continue
        root = Path(spec.origin).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(f"{package}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    out = {}
    for lib in LIBRARIES:
        try:
            out[f"version.{lib}"] = version(lib)
        except PackageNotFoundError:
            out[f"version.{lib}"] = "not installed"
    return out


def weights_sha256(weights: str | Path | None) -> str:
    """sha256 of the local `weights:` file a model starts from ("none" without one): the
    params name the file, this pins what was in it."""
    if not weights:
        return "none"
    path, digest = Path(weights), hashlib.sha256()
    if not path.is_file():
        return "missing"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# Identity tags a lineage carries only when they apply: `data.md5.exclude`, the md5 of the
# exclusion list (data/exclude/<dataset>.csv), only when it has entries. Absent means
# "none", on both sides: `identity` gives None for it, and the registry's match
# (registry.find_version: tags.get(key) == value) takes None to match exactly the versions
# without the tag — those registered before exclusion lists existed, and those without one.
OPTIONAL_IDENTITY = ("data.md5.exclude",)
# What identifies a candidate: same values here means retraining would repeat a version.
IDENTITY = ("params_hash", "code_hash", "weights.sha256", "data.md5.train", "data.md5.val",
            "data.md5.test", *(f"version.{lib}" for lib in LIBRARIES), *OPTIONAL_IDENTITY)


def identity(lineage: dict[str, str]) -> dict[str, str | None]:
    """The IDENTITY values of a lineage; None for an optional tag it does not carry."""
    return {k: lineage.get(k) if k in OPTIONAL_IDENTITY else lineage[k] for k in IDENTITY}


def lineage_tags(root: Path, dataset: str, md5s: dict[str, str], params_hash: str,
                 weights: str | Path | None = None, exclude_md5: str | None = None
                 ) -> dict[str, str]:
    """Tags of a candidate; `exclude_md5`: the exclusion list's md5 (None: no entries)."""
    tags = {"dataset": dataset, "params_hash": params_hash, "code_hash": code_hash(),
            "weights.sha256": weights_sha256(weights)}
    tags.update({f"data.md5.{split}": md5 for split, md5 in md5s.items()})
    if exclude_md5:
        tags["data.md5.exclude"] = exclude_md5
    tags.update(git_state(root))
    tags.update(library_versions())
    return tags


def flatten(section: BaseModel, prefix: str = "") -> dict[str, str]:
    """Flat {dotted.key: str(value)} view of a config section, for MLflow params."""
    out: dict[str, str] = {}
    for key, value in section.model_dump(mode="json").items():
        _flatten_into(out, f"{prefix}{key}", value)
    return out


def _flatten_into(out: dict[str, str], key: str, value: object) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten_into(out, f"{key}.{k}", v)
    else:
        out[key] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def params_hash(section: BaseModel) -> str:
    """Stable short hash of a config section (lineage tag, cache key)."""
    blob = json.dumps(section.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
