"""A checkpoint's description: the `meta.json` every family writes and every reader reads.

    {"format_version": 2, "family": "unet", "task": "segment",
     "class_names": ["circle", "square"], "weights": "best.pt", "config": {...}}

- `class_names`: the dataset's category names in category-id order (id k names
  `class_names[k-1]`), never a "background" entry of the model's own: a class that the
  dataset itself calls "background" is a real class like any other. Semantic label maps
  add value 0 for unlabelled pixels (`visiongate.semantic.label_names`).
- `weights`: a bare file name inside the checkpoint folder.
- `config`: the params.yaml section the model was trained with (imgsz, conf, ...).
- `thresholds` (task "multilabel" only, else absent/None): one decision threshold per class
  in class_names order, chosen on the val split after training; class k is predicted when
  its probability >= thresholds[k-1]. Files written before this field existed read as None.
- `artifacts` (optional): deployment artifacts beside the weights that passed the parity
  check (visiongate.export), runtime -> bare name in the folder, e.g.
  {"onnx": "best.onnx", "openvino": "best_openvino_model"}; `runtime`: the one serving
  predicts with ("torch" = the weights; absent: "torch").

Version rule: a file without `format_version` is version 1 (visiongate before this file
existed, when semantic families put "background" in class_names). Only FORMAT_VERSION is
read; any other version is refused (ModelError naming the file, the version found and the
version supported): retrain the model. Importable without torch.
"""

from __future__ import annotations

import json
import sys
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from visiongate.errors import ModelError, NotFound

FORMAT_VERSION = 2
META_FILE = "meta.json"
TASKS = ("detect", "segment", "instance", "classify", "multilabel")
OPTIONAL = {"config", "thresholds", "artifacts", "runtime"}  # may be absent from a meta.json
RUNTIMES = ("torch", "onnx", "openvino", "openvino-bf16")


@dataclass(frozen=True)
class CheckpointMeta:
    family: str
    task: str
    class_names: tuple[str, ...]
    weights: str
    config: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    thresholds: tuple[float, ...] | None = None
    artifacts: dict[str, str] | None = None
    runtime: str = "torch"

    def __post_init__(self) -> None:
        problem = _problem(vars(self))
        if problem:
            raise ModelError(f"checkpoint description: {problem}")
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if self.thresholds is not None:
            object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))

    @property
    def imgsz(self) -> int | None:
        """The training (and prediction) image size, from the config section."""
        return self.config.get("imgsz")

    def weights_path(self, checkpoint_dir: Path) -> Path:
        """The weights file; a symlink is refused (it could point anywhere)."""
        path = Path(checkpoint_dir) / self.weights
        if path.is_symlink():
            raise ModelError(f"{path}: the weights file is a symlink; it is not followed")
        return path

    def artifact_path(self, checkpoint_dir: Path, runtime: str) -> Path:
        """The file (or folder) a runtime predicts with; symlinks are refused."""
        if runtime == "torch":
            return self.weights_path(checkpoint_dir)
        name = (self.artifacts or {}).get(runtime)
        if name is None:
            raise ModelError(f"{checkpoint_dir}: no {runtime} artifact passed the parity check "
                             f"(artifacts: {sorted(self.artifacts or {}) or 'none'})")
        path = Path(checkpoint_dir) / name
        inside = [path, *path.rglob("*")] if path.is_dir() else [path]
        if any(p.is_symlink() for p in inside):
            raise ModelError(f"{path}: the {runtime} artifact holds a symlink; it is not followed")
        return path

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "class_names": list(self.class_names)}
        if self.artifacts is None:  # files without deployment artifacts stay as they were
            del data["artifacts"]
        if self.runtime == "torch":
            del data["runtime"]
        if self.thresholds is None:  # the file stays as it was before thresholds existed
            del data["thresholds"]
        else:
            data["thresholds"] = list(self.thresholds)
        return data

    def write(self, checkpoint_dir: Path) -> Path:
        """Write <checkpoint_dir>/meta.json (the folder is created if needed). In a
        distributed run, rank 0 alone writes it (models/distributed.py)."""
        path = Path(checkpoint_dir) / META_FILE
        dist = sys.modules.get("torch.distributed")
        if dist is not None and dist.is_available() and dist.is_initialized() and \
                dist.get_rank() != 0:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))
        return path

    @classmethod
    def read(cls, checkpoint_dir: Path) -> CheckpointMeta:
        """The description in <checkpoint_dir>/meta.json; NotFound without one, ModelError
        when it is unreadable, of another format version, or unsafe (weights outside)."""
        path = Path(checkpoint_dir) / META_FILE
        if not path.is_file():
            raise NotFound(f"{checkpoint_dir} is not a visiongate checkpoint (no {META_FILE})")
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ModelError(f"{path}: not a readable checkpoint description ({err})") from err
        if not isinstance(data, dict):
            raise ModelError(f"{path}: expected a JSON object, got {type(data).__name__}")
        _check_version(path, data.get("format_version", 1))
        names = {f.name for f in fields(cls)}
        unknown, missing = sorted(set(data) - names), sorted(names - set(data) - OPTIONAL)
        if unknown or missing:
            raise ModelError(f"{path}: unknown fields {unknown}, missing fields {missing}")
        problem = _problem(data)
        if problem:
            raise ModelError(f"{path}: {problem}")
        return cls(**data)


def _check_version(path: Path, found: Any) -> None:
    if found == FORMAT_VERSION and type(found) is int:
        return
    old = " (written before format_version was recorded)" if found == 1 else ""
    raise ModelError(f"{path}: checkpoint format version {found!r}{old}; this visiongate reads "
                     f"version {FORMAT_VERSION} only. Retrain the model with this visiongate "
                     f"(and register the new checkpoint) to use it.")


def _problem(meta: dict[str, Any]) -> str | None:
    """What makes a description (its fields by name) unusable, if anything."""
    family, task, names = meta["family"], meta["task"], meta["class_names"]
    if not isinstance(family, str) or not family:
        return f"family must be a name, got {family!r}"
    if task not in TASKS:
        return f"task must be one of {list(TASKS)}, got {task!r}"
    if not isinstance(names, (list, tuple)) or not all(isinstance(c, str) for c in names):
        return f"class_names must be a list of strings, got {names!r}"
    if not isinstance(meta.get("config", {}), dict):
        return f"config must be a mapping, got {type(meta['config']).__name__}"
    problem = _thresholds_problem(task, len(names), meta.get("thresholds")) or \
        _artifacts_problem(meta.get("artifacts"), meta.get("runtime", "torch"))
    if problem:
        return problem
    if not _bare_file_name(meta["weights"]):
        return (f"weights must be a file name inside the checkpoint folder (no folder, '..' "
                f"or absolute path), got {meta['weights']!r}")
    return None


def _thresholds_problem(task: str, k: int, thresholds: Any) -> str | None:
    if thresholds is None:
        return None
    if task != "multilabel":
        return f"thresholds are for task 'multilabel' only, not {task!r}"
    if not isinstance(thresholds, (list, tuple)) or len(thresholds) != k or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
            and 0 <= t <= 1 for t in thresholds):
        return f"thresholds must be {k} numbers in [0, 1] (one per class), got {thresholds!r}"
    return None


def _artifacts_problem(artifacts: Any, runtime: Any) -> str | None:
    if artifacts is not None and not (isinstance(artifacts, dict) and all(
            key in RUNTIMES[1:] and _bare_file_name(name) for key, name in artifacts.items())):
        return (f"artifacts must map runtimes {list(RUNTIMES[1:])} to names inside the "
                f"checkpoint folder, got {artifacts!r}")
    if runtime != "torch" and runtime not in (artifacts or {}):
        return f"runtime must be 'torch' or one of the artifacts, got {runtime!r}"
    return None


def _bare_file_name(name: Any) -> bool:
    if not isinstance(name, str) or name in ("", ".", "..") or "\x00" in name:
        return False
    return len(PurePosixPath(name).parts) == 1 and len(PureWindowsPath(name).parts) == 1 \
        and "/" not in name and "\\" not in name and ":" not in name
