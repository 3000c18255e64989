"""A registered version's MLflow model folder, checked before anything loads it.

MLflow's pyfunc loading imports the module the `MLmodel` file names (`loader_module`), puts
its `code` folders first on sys.path, and unpickles a `python_model`: whoever can write a
version's artifacts could run code in every process that loads it. visiongate loads a
version only when its MLmodel is the one visiongate writes (tracking.log_model):

    flavors:
      python_function: {loader_module: visiongate.serving, data: data/checkpoint,
                        env: {...}, python_version: ..., streamable: false}

— no other flavor, no `code` (MLflow's own `code: null` aside), `python_model`,
`model_config` or other keys, and no symlink anywhere in the folder. The checkpoint itself
(meta.json + weights) is then loaded by the family's own code (visiongate.models), which
unpickles nothing in full (ultralytics: its safe loading).
Importable without mlflow (yaml only).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from visiongate.errors import ModelError

MLMODEL = "MLmodel"
LOADER_MODULE = "visiongate.serving"  # what tracking.log_model writes (serving.__name__)
DATA = "data/checkpoint"
FLAVOR = "python_function"
FLAVOR_KEYS = {"loader_module", "data", "env", "python_version", "streamable"}
MAX_BYTES = 1 << 20  # an MLmodel is a few KB; its signature is the largest part


def check_model_dir(model_dir: Path, label: str) -> Path:
    """The checkpoint folder (model_dir/data/checkpoint) when model_dir is a visiongate
    model as described above; ModelError naming `label` (e.g. "shapes-detect v3") if not."""
    model_dir = Path(model_dir)
    if model_dir.is_symlink() or not model_dir.is_dir():
        raise ModelError(f"{label}: {model_dir} is not a local model folder")
    _no_symlinks(model_dir, label)
    problem = _flavor_problem(_read_mlmodel(model_dir / MLMODEL, label))
    if problem:
        raise ModelError(f"{label}: refused to load: its {MLMODEL} {problem}; visiongate loads "
                         f"only models it logged itself (loader module {LOADER_MODULE}, data "
                         f"{DATA}, no code)")
    checkpoint = model_dir / DATA
    if not (checkpoint / "meta.json").is_file():
        raise ModelError(f"{label}: the model has no checkpoint in {DATA} (meta.json missing)")
    return checkpoint


def _no_symlinks(root: Path, label: str) -> None:
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            if (Path(folder) / name).is_symlink():
                raise ModelError(f"{label}: refused to load: the model folder holds a symlink "
                                 f"({(Path(folder) / name).relative_to(root)})")


def _read_mlmodel(path: Path, label: str) -> dict:
    if path.is_symlink() or not path.is_file():
        raise ModelError(f"{label}: not a visiongate model (no {MLMODEL} file)")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ModelError(f"{label}: refused to load: its {MLMODEL} is {size} bytes "
                         f"(at most {MAX_BYTES})")
    try:
        data = yaml.safe_load(path.read_bytes()[:MAX_BYTES])
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ModelError(f"{label}: its {MLMODEL} is not readable YAML ({err})") from err
    if not isinstance(data, dict):
        raise ModelError(f"{label}: its {MLMODEL} is not a mapping")
    return data


def _flavor_problem(mlmodel: dict) -> str | None:
    """What in an MLmodel (parsed) differs from what visiongate writes, if anything."""
    flavors = mlmodel.get("flavors")
    if not isinstance(flavors, dict) or set(flavors) != {FLAVOR}:
        names = sorted(map(str, flavors)) if isinstance(flavors, dict) else flavors
        return f"has flavors {names!r}, expected only {FLAVOR!r}"
    conf = flavors[FLAVOR]
    if not isinstance(conf, dict):
        return f"has a {FLAVOR} flavor that is not a mapping"
    extra = sorted(str(k) for k, v in conf.items() if k not in FLAVOR_KEYS and
                   not (k == "code" and v is None))  # MLflow writes `code: null`
    if extra:
        return f"{FLAVOR} has unexpected entries {extra} (e.g. code, python_model)"
    if conf.get("loader_module") != LOADER_MODULE:
        return f"names loader module {conf.get('loader_module')!r}, not {LOADER_MODULE!r}"
    if conf.get("data") != DATA:
        return f"names data path {conf.get('data')!r}, not {DATA!r}"
    env = conf.get("env")
    if env is not None and not isinstance(env, str) and not (
            isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        return f"has an unexpected env entry {env!r}"
    return None
