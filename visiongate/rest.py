"""The REST edge of `visiongate serve --model`: MLflow's scoring server behind a guard.

`visiongate serve --model` runs uvicorn on `create_app`: MLflow's own scoring app
(`mlflow.pyfunc.scoring_server`, FastAPI) wrapped in `Guard`, a plain ASGI layer that
- refuses a request body over `serve.max_body_mb` with HTTP 413 before reading it (a
  declared Content-Length) or as soon as it grows past the limit (chunked);
- answers HTTP 400 for a scoring request MLflow would fail on with a 500: no Content-Type,
  JSON nested too deeply or holding a number longer than Python parses;
- rewrites every error answer (status >= 400) to {"error_code", "message"}: MLflow's
  `stack_trace` is dropped, a visiongate error raised by the model keeps its own one-line
  message (RequestTooLarge: 413, other kinds: 400), any other message loses echoed input,
  tracebacks and filesystem paths.

The limits reach the model through the server's environment (VISIONGATE_SERVE_MAX_*, set
by `visiongate serve` from params.yaml `serve:`; visiongate.serve_limits); the model reads
rows and pixels from there in any server (`mlflow models serve` too), the defaults being
ServeConfig's. Only this guard bounds the body: a plain `mlflow models serve` has no body
limit. MLflow's app itself is built by visiongate.tracking.scoring_app.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from visiongate.serve_limits import clean, environment, limits  # noqa: F401 (rest.environment)

MODEL_ENV = "VISIONGATE_SERVE_MODEL"  # the checked local model folder create_app loads
DRAIN_FACTOR = 4  # a declared body up to 4x the limit is read and dropped: the client sees the 413
log = logging.getLogger(__name__)

_ERROR_LINE = re.compile(r"^visiongate(?:\.\w+)*\.(\w+): (.+)$")


def error_answer(status: int, body: bytes) -> tuple[int, bytes]:
    """An error answer (status, JSON body) with only what a client may see."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = {"message": body.decode("utf-8", "replace")}
    if not isinstance(payload, dict):
        payload = {"message": str(payload)}
    trace = str(payload.get("stack_trace") or "")
    if trace:  # for the operator: the server's log, never the client
        log.warning("request failed (status %d):\n%s", status, trace)
    last = (trace.strip().splitlines() or [""])[-1]
    ours = _ERROR_LINE.match(last)
    if ours:  # a visiongate error from the model: its message is written for the user
        status = 413 if ours[1] == "RequestTooLarge" else 400
        code, message = ("REQUEST_TOO_LARGE" if status == 413 else "BAD_REQUEST"), ours[2]
    else:
        code = payload.get("error_code") or f"HTTP_{status}"
        message = payload.get("message", payload.get("detail", ""))
    message = clean(message if isinstance(message, str) else json.dumps(message))
    return status, json.dumps({"error_code": str(code), "message": message}).encode()


class _CleanErrors:
    """An ASGI `send` that passes answers below 400 through and rewrites the others."""

    def __init__(self, send):
        self.send, self.start, self.chunks = send, None, []

    async def __call__(self, message: dict) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 400:
            self.start = message
            return
        if self.start is None or message["type"] != "http.response.body":
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            await respond(self.send, *error_answer(self.start["status"], b"".join(self.chunks)))


async def respond(send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: dict, name: bytes) -> str:
    return next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == name), "")


def _malformed(scope: dict, body: bytes) -> str | None:
    """Why a scoring request cannot be parsed, for what MLflow's scoring app would answer
    with HTTP 500 (no Content-Type; JSON nested too deeply or with a number too long for
    Python's int); None otherwise — the rest MLflow answers itself."""
    if scope.get("method") != "POST" or not scope.get("path", "").endswith("/invocations"):
        return None
    kind = _header(scope, b"content-type").split(";")[0].strip().lower()
    if not kind:
        return "a Content-Type header is required (application/json or text/csv)"
    if kind == "application/json":
        try:
            json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError too
            return "the body is not valid JSON (or nests too deeply, or holds a number too long)"
    return None


class Guard:
    """ASGI middleware: the body-size limit and clean error answers (see the module doc)."""

    def __init__(self, app, max_body_mb: float):
        self.app, self.limit = app, int(max_body_mb * 1024 * 1024)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = _CleanErrors(send)
        body = await self._body(scope, receive)
        if body is None:
            mb = f"{self.limit / 1024 / 1024:g}"
            return await respond(send.send, 413, json.dumps({
                "error_code": "REQUEST_TOO_LARGE",
                "message": f"request body over {mb} MB (serve.max_body_mb)"}).encode())
        malformed = _malformed(scope, body)
        if malformed:
            return await respond(send.send, 400, json.dumps({
                "error_code": "BAD_REQUEST", "message": malformed}).encode())
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _body(self, scope: dict, receive) -> bytes | None:
        """The whole body, or None over the limit (a declared one is refused unread, or
        read and dropped up to DRAIN_FACTOR x the limit when the client sends it anyway)."""
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > self.limit:
            expects = _header(scope, b"expect").lower() == "100-continue"
            if not expects and int(declared) <= DRAIN_FACTOR * self.limit:
                while (await receive()).get("more_body"):
                    pass
            return None
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > self.limit:
                return None
            if not message.get("more_body"):
                return bytes(body)


def create_app():
    """uvicorn's factory: the model folder named by VISIONGATE_SERVE_MODEL (a checked local
    copy, never a models:/ URI) in MLflow's scoring app, behind Guard."""
    from visiongate.mlmodel import check_model_dir
    from visiongate.tracking import scoring_app

    # a local model folder checked out by `visiongate serve` (registry.checkout_model), checked
    # again here: MLflow imports the loader module its MLmodel names
    model_dir = Path(os.environ[MODEL_ENV])
    check_model_dir(model_dir, os.environ[MODEL_ENV])
    return Guard(scoring_app(model_dir), limits().max_body_mb)
