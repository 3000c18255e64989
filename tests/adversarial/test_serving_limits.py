"""Hostile input at the REST server (issue #20).

The scoring server `visiongate serve --model` runs (uvicorn on visiongate.rest:create_app,
127.0.0.1) serving an untrained tiny U-Net, with small limits (1 MB body, 4 rows, 1 Mpx).
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest
from PIL import Image

from visiongate import cells, rest, stack
from visiongate.config import ServeConfig

LIMITS = ServeConfig(max_body_mb=1, max_rows=4, max_pixels=1_000_000)
LEAKS = ("Traceback", "stack_trace", "site-packages", "/tmp", "/work", "/home", ".py\"")


# ---- images ------------------------------------------------------------------------------
def _png(size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_of(width: int, height: int, depth: int, colour: int, idat: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + \
        _chunk(b"IEND", b"")


def _undecodable_png() -> bytes:
    """Valid chunks and checksums (PIL's `verify` passes) around pixel data zlib refuses."""
    return _png_of(40, 30, 8, 2, b"\x78\x9c" + bytes(range(7, 250)) * 4)


def _huge_png(width: int = 13_300, height: int = 13_300) -> bytes:
    """A 1-bit PNG of zeros: ~177 Mpx (just under PIL's own bomb error), ~20 KB on disk."""
    row = b"\0" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return _png_of(width, height, 1, 0, idat)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---- the server --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """An MLflow pyfunc model as tracking.log_model writes it, from an untrained U-Net."""
    import mlflow
    import torch

    from visiongate.config import SegmentConfig
    from visiongate.models import CheckpointMeta
    from visiongate.models.unet import DEPTH, UNet
    from visiongate.tracking import SIGNATURE

    root = tmp_path_factory.mktemp("served")
    checkpoint, names = root / "checkpoint", ("circle", "square")
    checkpoint.mkdir()
    config = SegmentConfig(imgsz=32, base_channels=4, batch=4).model_dump(mode="json")
    torch.save({"config": config, "class_names": list(names), "depth": DEPTH,
                "state_dict": UNet(len(names) + 1, 4, DEPTH).state_dict()}, checkpoint / "best.pt")
    CheckpointMeta(family="unet", task="segment", class_names=names, config=config,
                   weights="best.pt").write(checkpoint)
    mlflow.pyfunc.save_model(str(root / "model"), loader_module="visiongate.serving",
                             data_path=str(checkpoint), signature=SIGNATURE)
    return root / "model"


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    """(port, pid): the scoring server on a free loopback port, its log in a tmp file."""
    port, log = stack.free_port(), tmp_path_factory.mktemp("server-log") / "server.log"
    env = {**os.environ, **rest.environment(LIMITS), rest.MODEL_ENV: str(model_dir),
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory",
                                 "visiongate.rest:create_app", "--host", "127.0.0.1",
                                 "--port", str(port)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not stack.Server("mlflow", "127.0.0.1", port).healthy(timeout=1):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the scoring server did not start"
            time.sleep(0.3)
        yield port, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def _request(port: int, body: bytes, headers: dict | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/invocations", body=body,
                     headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def _predict(port: int, images: list[str], **params) -> tuple[int, str]:
    payload = {"dataframe_records": [{"image": i} for i in images], "params": params}
    return _request(port, json.dumps(payload).encode())


def _no_leak(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} in the answer: {text[:500]}"


def _peak_rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])


# ---- serving -----------------------------------------------------------------------------
def test_an_undecodable_png_answers_its_own_error_row(server):
    bad = _undecodable_png()
    cells.readable_image(bad)  # passes the cheap check: only decoding finds it broken
    with pytest.raises(cells.RowRefused):
        cells.readable_image(bad, decode=True)

    status, text = _predict(server[0], [_b64(_png()), _b64(bad), _b64(_png((20, 10)))])

    assert status == 200, text
    rows = json.loads(text)["predictions"]
    assert [r.get("width") for r in rows] == [40, None, 20]
    assert "segments" in rows[0] and "segments" in rows[2]
    assert rows[1]["reason"] == "unreadable" and rows[1]["error"].startswith("image 1: ")
    _no_leak(text)


def test_a_body_over_the_limit_is_413(server):
    port, limit = server[0], int(LIMITS.max_body_mb * 1024 * 1024)
    # sent whole (read and dropped up to 4x the limit): the client still gets the 413
    status, text = _request(port, b"x" * (2 * limit))
    assert status == 413 and json.loads(text)["error_code"] == "REQUEST_TOO_LARGE", text
    # declared 40 MB with Expect: 100-continue: refused before one byte of body is sent
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("POST", "/invocations")
    for key, value in (("Content-Type", "application/json"), ("Expect", "100-continue"),
                       ("Content-Length", str(40 * 1024 * 1024))):
        conn.putheader(key, value)
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()
    # no Content-Length (chunked): refused once the body read so far passes the limit
    assert asyncio.run(_guard_status([b"x" * 400_000] * 3)) == 413
    assert asyncio.run(_guard_status([b"x" * 400_000] * 2)) == 200


async def _guard_status(chunks: list[bytes]) -> int:
    """Guard around an app that answers 200 with the body's length; the status sent."""
    async def app(scope, receive, send):
        body = (await receive())["body"]
        await rest.respond(send, 200, str(len(body)).encode())

    messages = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    sent = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    await rest.Guard(app, LIMITS.max_body_mb)({"type": "http", "headers": []}, receive, send)
    return sent[0]["status"]


def test_too_many_rows_is_413(server):
    status, text = _predict(server[0], [_b64(_png())] * (LIMITS.max_rows + 1))
    assert status == 413, text
    assert json.loads(text) == {"error_code": "REQUEST_TOO_LARGE",
                                "message": "5 images in one request; at most 4 (serve.max_rows)"}


def test_a_177_megapixel_png_is_too_large_without_being_decoded(server):
    huge = _huge_png()
    assert len(huge) < 64 * 1024
    tracemalloc.start()  # the default limit refuses it from its header: no pixel buffer
    with pytest.raises(cells.RowRefused) as refused:
        cells.readable_image(huge, max_pixels=ServeConfig().max_pixels)
    assert tracemalloc.get_traced_memory()[1] < 8 * 1024 * 1024
    tracemalloc.stop()
    assert refused.value.reason == "too_large"
    port, pid = server
    before = _peak_rss_kb(pid)

    status, text = _predict(port, [_b64(huge), _b64(_png())])

    assert status == 200, text
    rows = json.loads(text)["predictions"]
    assert rows[0]["reason"] == "too_large" and "13300x13300" in rows[0]["error"]
    assert rows[1]["width"] == 40
    assert _peak_rss_kb(pid) - before < 100 * 1024, "the server's peak memory grew > 100 MB"


def test_error_answers_carry_no_traceback_or_path(server):
    port = server[0]
    for body in (b"{not json", json.dumps({"dataframe_records": [{"img": "x"}]}).encode(),
                 json.dumps({"dataframe_records": [{"image": _b64(_png())}],
                             "params": {"min_score": "high"}}).encode(),
                 json.dumps({"dataframe_split": {"columns": ["image"]}}).encode()):
        status, text = _request(port, body)
        assert 400 <= status < 500, text
        assert set(json.loads(text)) == {"error_code", "message"}
        _no_leak(text)


def test_serve_passes_the_limits_of_params_yaml_in_the_environment(tmp_path, monkeypatch):
    from flows import models_cli
    from flows.cli import build_parser
    from visiongate import registry

    (tmp_path / "params.yaml").write_text(
        "mlflow: {tracking_uri: 'postgresql://u:pw-secret@127.0.0.1:1/db'}\n"
        "serve: {max_rows: 7, max_pixels: 1234}\n")
    monkeypatch.setattr(registry, "resolve", lambda uri, model: None)
    monkeypatch.setattr(registry, "checkout_model", lambda uri, version, root: tmp_path / "m")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("VISIONGATE_SERVE_MAX_ROWS", raising=False)
    calls = []
    monkeypatch.setattr(models_cli.os, "execve",  # the CLI becomes the server
                        lambda path, cmd, env: calls.append((cmd, env)))
    args = build_parser().parse_args(["serve", "--model", "models:/m@champion", "--root",
                                      str(tmp_path)])
    models_cli._serve(args)
    (cmd, env), = calls
    assert "visiongate.rest:create_app" in cmd and not any("pw-secret" in c for c in cmd)
    assert env["MLFLOW_TRACKING_URI"].endswith("@127.0.0.1:1/db")
    assert env[rest.MODEL_ENV] == str(tmp_path / "m")
    assert rest.limits(env) == ServeConfig(max_rows=7, max_pixels=1234)
