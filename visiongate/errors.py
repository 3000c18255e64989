"""The one error family users meet. The CLI prints a `VisiongateError` in one line (exit 1;
`RetrainBusy` exit 4); anything else is a bug and keeps its traceback.

Each kind also derives from the builtin it replaces (ValueError, RuntimeError,
FileNotFoundError), so callers that caught those keep working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class VisiongateError(Exception):
    """A user-facing error: bad config, bad data, a model or registry problem."""


class ConfigError(VisiongateError, ValueError):
    """params.yaml (or a command-line value standing for it) is invalid."""


class DataError(VisiongateError, ValueError):
    """A dataset, split or annotation file cannot be used as given."""


class ModelError(VisiongateError, ValueError):
    """A checkpoint cannot be read, loaded or run (corrupted, unknown format, unsafe)."""


class RegistryError(VisiongateError, ValueError):
    """A registered model, version or alias does not exist or cannot be moved as asked."""


class NotFound(VisiongateError, FileNotFoundError):
    """A file or folder the user named is missing."""


class TrainingDiverged(VisiongateError, RuntimeError):
    """The loss became NaN or infinite: training stopped, the last good checkpoint kept."""


class TrackingUnavailable(VisiongateError, RuntimeError):
    """The MLflow tracking server did not answer (after the I/O retries)."""


class RetrainBusy(VisiongateError, RuntimeError):
    """Another retrain of the same dataset is running: retrains of one dataset never overlap."""


class StackError(VisiongateError, RuntimeError):
    """A local server of `visiongate up` cannot start, or its port is taken by another."""


class RequestTooLarge(DataError):
    """A prediction request exceeds a `serve:` limit (body size, images per request)."""


def describe(err: ValidationError) -> str:
    """A ValidationError in one line: "detect.epochs: Input should be ...; segment.x: ..."."""
    parts = []
    for e in err.errors(include_url=False):
        where = ".".join(str(p) for p in e["loc"] if p != "[key]")  # a dict key's own error
        msg = e["msg"].removeprefix("Value error, ").replace("\n", " ")
        parts.append(f"{where}: {msg}" if where and not msg.startswith(where) else msg)
    return "; ".join(parts)
