"""visiongate.loadgen: loopback only, bounded, nearest-rank percentiles, /proc memory."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from visiongate import loadgen


@pytest.mark.parametrize("url", ["https://127.0.0.1/x", "http://example.com/invocations",
                                 "http://10.0.0.1:5001/", "http://127.0.0.1@example.com/",
                                 "http://u:p@127.0.0.1/", "ftp://localhost/", "127.0.0.1:80"])
def test_only_plain_http_to_loopback_is_loaded(url):
    with pytest.raises(ValueError):
        loadgen.run(url, b"{}", requests=1)


@pytest.mark.parametrize("kwargs", [{"clients": 0}, {"clients": loadgen.MAX_CLIENTS + 1},
                                    {"requests": 0}, {"requests": loadgen.MAX_REQUESTS + 1},
                                    {"timeout_s": 0}, {"timeout_s": loadgen.MAX_SECONDS + 1}])
def test_counts_and_time_are_bounded(kwargs):
    with pytest.raises(ValueError):
        loadgen.run("http://127.0.0.1:1/", b"{}", **kwargs)


def test_nearest_rank_percentiles():
    values = list(range(100, 0, -1))  # 1..100, unordered
    assert loadgen.percentile(values, 50) == 50
    assert loadgen.percentile(values, 99) == 99
    assert loadgen.percentile(values, 100) == 100
    assert loadgen.percentile([7.0], 99) == 7.0
    assert loadgen.percentile([1, 2, 3], 50) == 2
    assert loadgen.percentile([], 50) != loadgen.percentile([], 50)  # NaN
    with pytest.raises(ValueError):
        loadgen.percentile(values, 0)


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = 500 if body == b"fail" else 200
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_run_counts_answers_errors_and_what_check_refuses():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/invocations"
    try:
        ok = loadgen.run(url, [b'{"a": 1}', b'{"a": 2}'], clients=3, requests=30, timeout_s=30,
                         check=lambda i, status, data: None if json.loads(data)["a"] == i % 2 + 1
                         else "mixed up")
        bad = loadgen.run(url, [b"{}", b"fail"], clients=2, requests=10, timeout_s=30,
                          check=lambda i, status, data: "refused" if data == b"{}" else None)
    finally:
        server.shutdown()
    assert ok.complete and ok.errors == 0 and ok.statuses == {200: 30}, ok.summary()
    assert len(ok.latencies_ms) == 30 and ok.throughput > 0 and ok.p50_ms <= ok.p99_ms
    assert bad.count == 10 and bad.errors == 10 and bad.statuses == {200: 5, 500: 5}
    assert sorted(bad.examples) == ["HTTP 500: fail", "refused"]


def test_a_refused_connection_is_an_error_not_an_exception():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = loadgen.run(f"http://localhost:{port}/", b"{}", clients=2, requests=4, timeout_s=10)
    assert result.count == 4 and result.errors == 4 and not result.latencies_ms
    assert "ConnectionRefusedError" in result.examples[0]


def test_tree_rss_sums_a_process_and_its_children():
    import subprocess
    import sys
    import time

    parent = subprocess.Popen(["/bin/sh", "-c", f"{sys.executable} -c 'import time; "
                               "time.sleep(30)' & wait"])
    try:
        deadline = time.monotonic() + 10
        while len(pids := loadgen.tree_pids(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        (child,) = set(pids) - {parent.pid}
        while loadgen.rss(child) < 4 * 1024 * 1024 and time.monotonic() < deadline:
            time.sleep(0.05)  # python still starting
        time.sleep(0.2)
        assert loadgen.tree_rss(parent.pid) == loadgen.rss(parent.pid) + loadgen.rss(child)
        assert loadgen.rss(child) > 4 * 1024 * 1024
        assert parent.pid in loadgen.tree_pids(os.getpid())
    finally:
        for pid in set(loadgen.tree_pids(parent.pid)) - {parent.pid}:
            os.kill(pid, 9)
        parent.wait()
    assert loadgen.rss(parent.pid) == 0
    with pytest.raises(ProcessLookupError):
        loadgen.tree_rss(parent.pid)
