"""Starting a model from a local `weights:` file, and the one summary every family gives of
what it loaded.

- Torchvision families, the U-Net and the torchvision classifiers read the file with
  `torch.load(weights_only=True)` (tensors only; a pinned sha256 is checked on the bytes
  loaded). Its tensors are matched to the model's by name — as saved, or as a backbone saved
  on its own (each family names its backbone's prefix: e.g. a torchvision `resnet50`
  classification state dict for `backbone.body.` of Faster R-CNN); a DataParallel
  `module.` prefix is dropped. Tensors of another shape (a head for another class count)
  and tensors the file lacks stay as built (freshly initialised). A file that shares no
  tensor with the model is a ModelError.
- Ultralytics families: ultralytics transfers the tensors itself (by name and shape) when
  training starts; `report_ultralytics_transfer` compares what it trains with what the file
  held at that moment.
- Either way a `WeightsReport` is printed ("detect.weights: loaded 310/322 tensors from X;
  re-initialised (shape differs): ...") and written into the training folder
  (REPORT_FILE), whence the flow records it as MLflow tags `weights.*`.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from visiongate.errors import ConfigError, ModelError, NotFound

REPORT_FILE = "weights_report.json"
SHOWN = 8  # re-initialised names listed in a summary or tag; the rest are counted
# (the file's key prefix, the model's): a backbone saved on its own, or an explicit key map
Rename = tuple[str, str] | dict[str, str]


@dataclass(frozen=True)
class WeightsReport:
    """What a model took from its `weights:` file."""

    section: str                    # detect | segment | classify
    path: str                       # the file, resolved
    loaded: int                     # tensors loaded from the file
    total: int                      # tensors of the model
    reinitialised: tuple[str, ...]  # in the file and the model, another shape: as built
    not_in_file: int                # the model's tensors the file lacks: as built
    matched: str = "as saved"       # how the file's names met the model's

    def _names(self) -> str:
        shown = ", ".join(self.reinitialised[:SHOWN]) or "none"
        more = len(self.reinitialised) - SHOWN
        return shown + (f" (+{more} more)" if more > 0 else "")

    def summary(self) -> str:
        return (f"{self.section}.weights: loaded {self.loaded}/{self.total} tensors from "
                f"{self.path} (names {self.matched}); re-initialised (shape differs, e.g. "
                f"another class count): {self._names()}; not in the file (as built): "
                f"{self.not_in_file}")

    def tags(self) -> dict[str, str]:
        """Small MLflow tags: counts and the first re-initialised names."""
        return {"weights.loaded": f"{self.loaded}/{self.total}",
                "weights.matched": self.matched,
                "weights.reinitialised": self._names(),
                "weights.not_in_file": str(self.not_in_file)}

    def write(self, out_dir: Path) -> Path:
        path = Path(out_dir) / REPORT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {**asdict(self), "reinitialised": list(self.reinitialised)}
        path.write_text(json.dumps(data, indent=2))
        return path

    @classmethod
    def read(cls, out_dir: Path) -> WeightsReport | None:
        """The report a training folder holds (None: trained without `weights:`)."""
        path = Path(out_dir) / REPORT_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(**{**data, "reinitialised": tuple(data["reinitialised"])})


def read_local_state(path: str | Path, section: str, pinned: str | None = None) -> dict:
    """The state dict in a local `<section>.weights` file (a state dict, or a checkpoint
    holding `state_dict`): tensors only; the bytes hashed are the bytes loaded."""
    if not Path(path).is_file():
        raise NotFound(f"{section}.weights: no local file {path} (nothing is downloaded)")
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if pinned and digest != pinned.strip().lower():
        raise ConfigError(f"{section}.weights: {path} has sha256 {digest}, not the pinned "
                          f"{section}.weights_sha256 {pinned}; it was not loaded")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as err:
        raise ConfigError(f"{section}.weights: {path} is not a file of tensors that loads "
                          f"without unpickling code ({type(err).__name__}: {str(err)[:200]})") from err
    state = state.get("state_dict", state) if isinstance(state, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"{section}.weights: {path} holds no state dict")
    return state


def _renamed(state: dict, own: dict, rename: Rename) -> dict:
    out = {}
    for key, value in state.items():
        if isinstance(rename, dict):
            new = rename.get(key)
        else:
            new = rename[1] + key[len(rename[0]):] if key.startswith(rename[0]) else None
        if new in own:
            out[new] = value
    return out


def _described(rename: Rename) -> str:
    if isinstance(rename, dict):
        return "as a backbone (mapped key by key)"
    if rename == ("", ""):
        return "as saved"
    return f"as a backbone: '{rename[0]}...' -> '{rename[1]}...'"


def match(state: dict, own: dict, renames: tuple[Rename, ...] = ()) -> tuple[dict, str]:
    """The file's tensors under the model's names — as saved or by the rename under which
    most of them are the model's — and how they were matched."""
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    best, how = {}, "as saved"
    for rename in (("", ""), *renames):
        named = _renamed(state, own, rename)
        if len(named) > len(best):
            best, how = named, _described(rename)
    return best, how


def load_weights_file(model: nn.Module, path: str | Path | None, section: str,
                      pinned: str | None = None, renames: tuple[Rename, ...] = ()
                      ) -> WeightsReport | None:
    """Start `model` from a local weights file (see the module doc); None without one."""
    if not path:
        return None
    own = model.state_dict()
    named, how = match(read_local_state(path, section, pinned), own, renames)
    usable = {k: v for k, v in named.items() if own[k].shape == v.shape}
    if not usable:
        raise ModelError(f"{section}.weights: {path} shares no tensor with this model (by "
                         f"name and shape, as saved{' or as its backbone' if renames else ''})")
    model.load_state_dict(usable, strict=False)
    report = WeightsReport(section, str(path), len(usable), len(own),
                           tuple(sorted(set(named) - set(usable))), len(set(own) - set(named)),
                           how)
    print(report.summary(), flush=True)
    return report


def transfer_report(section: str, path: str | Path, source: dict, model: nn.Module
                    ) -> WeightsReport:
    """What ultralytics transfers from `source` (the file's tensors) into `model`: the
    tensors of the same name and shape."""
    own = getattr(model, "module", model).state_dict()  # unwrapped from DDP
    common = [k for k in own if k in source]
    loaded = [k for k in common if own[k].shape == source[k].shape]
    return WeightsReport(section, str(path), len(loaded), len(own),
                         tuple(sorted(set(common) - set(loaded))), len(own) - len(common))


def report_ultralytics_transfer(model, section: str, path: str | Path, out_dir: Path) -> None:
    """When ultralytics starts training `model` (an ultralytics Model whose module holds the
    `weights:` file's tensors), print and write what it transferred into the model it trains
    (built for the dataset's classes)."""
    source = model.model.state_dict()  # what was read from the file, held until then

    def callback(trainer) -> None:
        report = transfer_report(section, path, source, trainer.model)
        report.write(out_dir)
        print(report.summary(), flush=True)

    model.add_callback("on_pretrain_routine_end", callback)
