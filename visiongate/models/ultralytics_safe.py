"""Ultralytics checkpoints (`.pt`) are pickles, and unpickling one can run any code it
names. visiongate never unpickles one in full unless the user pinned that file's sha256:

- every ultralytics load in the process uses ultralytics' safe loading (torch's weights-only
  unpickler plus an allow-list of ultralytics' and torch's own model classes;
  model yamls are built without `eval`): `ULTRALYTICS_SAFE_LOAD=1` before ultralytics is
  imported (inherited by any subprocess it starts) and its flag set again after import, in
  case something imported ultralytics before visiongate;
- ultralytics' trainer re-reads last.pt / best.pt in full to strip the optimizer state at the
  end of training (`strip_optimizer`): that read uses the same safe loading here;
- a file safe loading refuses is a ModelError (a checkpoint: registry, predict, serving) or a
  ConfigError (a local `weights:` file), never a second, unrestricted attempt — except for a
  `weights:` file whose sha256 the user pinned in params.yaml (`<task>.weights_sha256`).

Safe loading registers the classes a checkpoint names (from the allow-list) as safe globals
for the whole process, so a later `torch.load(weights_only=True)` elsewhere accepts them too:
ultralytics/torch nn.Module classes and a few plain data types, nothing that runs code.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from visiongate.errors import ConfigError, ModelError

ENV = "ULTRALYTICS_SAFE_LOAD"
# what ultralytics' safe loading raises for a file it will not load (it reports a refused
# global as TypeError; an unknown ultralytics module as ModuleNotFoundError)
REFUSALS = (TypeError, pickle.UnpicklingError, ModuleNotFoundError)
CHUNK = 1 << 20


def enforce() -> None:
    """Turn ultralytics' safe loading on for this process (ultralytics already imported)."""
    from ultralytics import utils
    from ultralytics.nn import tasks
    from ultralytics.utils import torch_utils

    if not tasks._SafeLoad.SUPPORTED:
        raise ModelError("this torch cannot load ultralytics checkpoints safely (weights_only "
                         "loading needs torch >= 2.6); visiongate does not unpickle them")
    os.environ[ENV] = "1"
    utils.SAFE_LOAD = tasks.SAFE_LOAD = True
    torch_utils.torch_load = _weights_only_load


def _weights_only_load(f, *args, **kwargs):
    """ultralytics' strip_optimizer reads its own last.pt / best.pt with this (a refused file
    is skipped with a warning there, and final validation then refuses it)."""
    from ultralytics.nn.tasks import torch_safe_load

    return torch_safe_load(f, safe_only=True)[0]


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).replace("ERROR ❌️", "").split())
    return text[:300] or type(err).__name__


@contextmanager
def refused_as_model_error(weights: Path, advice: str = "Retrain the model with this "
                           "visiongate.") -> Iterator[None]:
    """A checkpoint that safe loading will not load, as a ModelError naming it."""
    try:
        yield
    except REFUSALS as err:
        raise ModelError(
            f"{weights}: refused to load this ultralytics checkpoint: {_reason(err)}. "
            "Ultralytics .pt files are pickles, which can run code when loaded; visiongate "
            f"loads them only with ultralytics' safe loading (known model classes, nothing "
            f"else). {advice}") from err


@contextmanager
def _unrestricted() -> Iterator[None]:
    """Ultralytics' full unpickling, for a file whose pinned sha256 matched."""
    from ultralytics import utils
    from ultralytics.nn import tasks

    tasks.SAFE_LOAD = utils.SAFE_LOAD = False
    try:
        yield
    finally:
        tasks.SAFE_LOAD = utils.SAFE_LOAD = True


def _private_copy(path: Path, into: Path) -> tuple[Path, str]:
    """A copy of path in a private folder and the sha256 of the bytes copied: what is hashed
    is what is loaded, even if the original changes meanwhile."""
    digest, copy = hashlib.sha256(), into / "weights.pt"
    with open(path, "rb") as src, open(copy, "wb") as dst:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            dst.write(chunk)
    return copy, digest.hexdigest()


def load_weights(model, path: Path, pinned: str | None, section: str):
    """model.load(path) for a local `<section>.weights` file (a pickle).

    Loaded with safe loading; a file that safe loading refuses is loaded in full only when
    its sha256 equals `pinned` (`<section>.weights_sha256`), else ConfigError saying how to
    trust it. A pinned sha256 that does not match is a ConfigError before anything loads."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        raise ConfigError(f"{section}.weights: {path} is not a regular file (a symlink is not "
                          "followed; nothing is downloaded)")
    with tempfile.TemporaryDirectory(prefix="visiongate-weights-") as tmp:
        copy, digest = _private_copy(path, Path(tmp))
        if pinned and digest != pinned.strip().lower():
            raise ConfigError(f"{section}.weights: {path} has sha256 {digest}, not the pinned "
                              f"{section}.weights_sha256 {pinned}; it was not loaded")
        try:
            return model.load(str(copy))
        except REFUSALS as err:
            if not pinned:
                raise ConfigError(
                    f"{section}.weights: {path} is a pickle that ultralytics' safe loading "
                    f"refuses ({_reason(err)}); unpickling it could run code. If you trust "
                    f"this file, pin it in params.yaml: {section}.weights_sha256: {digest}"
                ) from err
        print(f"{section}.weights: {path} matches its pinned sha256; loading it in full")
        with _unrestricted():
            return model.load(str(copy))
