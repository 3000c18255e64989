"""Where a `weights:` file (params.yaml `detect/segment/classify.weights`) may come from.

The rule: the path — relative paths against the project root, the folder of params.yaml —
is resolved (symlinks followed) and must then lie inside the weights folder:
`<project root>/weights`, or the folder the environment variable VISIONGATE_WEIGHTS_DIR
names (relative: against the project root). Only the environment moves that folder, so an
edit of params.yaml alone cannot point a model at an arbitrary file (an ultralytics `.pt`
is a pickle: loading one can run code). A file anywhere else is accepted only when
`<section>.weights_sha256` pins its bytes; the bytes read are then checked against the pin
and a different file is refused before anything of it loads.

A missing file inside the folder passes here: loading says it is missing (NotFound).
Imports only the standard library and visiongate.errors (params loading stays light).
"""

from __future__ import annotations

import os
from pathlib import Path

from visiongate.errors import ConfigError

ENV = "VISIONGATE_WEIGHTS_DIR"
FOLDER = "weights"
PICKLE_NOTE = ("an ultralytics .pt file is a pickle: loading it can run code, so visiongate "
               "loads it only through ultralytics' safe loading unless its sha256 is pinned")


def weights_dir(root: str | Path | None = None) -> Path:
    """The folder `weights:` files must resolve into (see the module doc); `root` None: the
    current directory."""
    base = Path(root) if root is not None else Path.cwd()
    named = os.environ.get(ENV, "").strip()
    return (base / Path(named or FOLDER).expanduser()).resolve()


def allowed_weights(section: str, weights: str | None, pinned: str | None,
                    root: str | Path | None = None, ultralytics: bool = False) -> Path | None:
    """The absolute, resolved path of `<section>.weights` (None when unset), or ConfigError
    naming the key, the path and the folder when the rule refuses it. `root` None: paths are
    relative to the current directory (a config built in code, not read from params.yaml)."""
    if not weights:
        return None
    base = Path(root) if root is not None else Path.cwd()
    path = (base / Path(weights).expanduser()).resolve()
    if pinned:  # the user vouches for exactly these bytes; loading checks them
        return path
    folder = weights_dir(root)
    if not path.is_relative_to(folder):
        via = "" if str(path) == weights else f" (resolves to {path})"
        note = f"; {PICKLE_NOTE}" if ultralytics else ""
        raise ConfigError(
            f"{section}.weights: {weights}{via} is outside the weights folder {folder}. Put the "
            f"file itself (not a link to it) in that folder, set {ENV} to the folder holding "
            f"it, or pin its bytes with {section}.weights_sha256: <its sha256>{note}")
    return path
