"""What the model side of serving shares with the REST guard (visiongate.rest): the
serving limits as carried by the server's environment, and client-safe message text.

The limits reach the model through VISIONGATE_SERVE_MAX_* (set by `visiongate serve` from
params.yaml `serve:`); the model (visiongate.serving, visiongate.cells) reads rows and
pixels from there in any server, the defaults being ServeConfig's. Kept apart from
visiongate.rest so that the model does not import the REST edge, which builds its app
through visiongate.tracking (which imports the model).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from pydantic import ValidationError

from visiongate.config import ServeConfig
from visiongate.errors import ConfigError, describe

ENV = {"max_body_mb": "VISIONGATE_SERVE_MAX_BODY_MB", "max_rows": "VISIONGATE_SERVE_MAX_ROWS",
       "max_pixels": "VISIONGATE_SERVE_MAX_PIXELS"}

_PATH = re.compile(r"(?:file:/*)?(?:[A-Za-z]:)?(?:[/\\][\w.+~@%-]+){2,}[/\\]?")


def limits(env: Mapping[str, str] | None = None) -> ServeConfig:
    """The serving limits: VISIONGATE_SERVE_MAX_* (of os.environ or `env`) over
    ServeConfig's defaults."""
    env = os.environ if env is None else env
    given = {key: env[var] for key, var in ENV.items() if env.get(var)}
    try:
        return ServeConfig(**given)
    except ValidationError as err:
        raise ConfigError(f"VISIONGATE_SERVE_*: {describe(err)}") from err


def environment(cfg: ServeConfig) -> dict[str, str]:
    """The variables that carry `cfg` into a server process."""
    return {var: str(getattr(cfg, key)) for key, var in ENV.items()}


def clean(text: str, limit: int = 300) -> str:
    """A message fit for a client: no traceback, echoed input, paths; one line, short."""
    text = text.split("Traceback (most recent call last)")[0]
    text = re.sub(r"^Failed to predict data .*?\nError: ", "", text, flags=re.DOTALL)
    text = text.split("\nInput:")[0][:4000]
    text = re.sub(r"(['`])[^'`]{60,}\1", r"\1…\1", text)  # a long quoted echo of the input
    text = " ".join(_PATH.sub("<path>", text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
