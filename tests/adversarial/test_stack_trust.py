"""Hostile state around the local stack (issue #20): stale or forged pid/state files and
a store URI holding a password, with throwaway processes; no Prefect or MLflow server is
started.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from visiongate import stack


def _sleeper(*args: str) -> subprocess.Popen:
    """An unrelated process (its own session: a wrong killpg could not reach the tests)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *args],
                            start_new_session=True)


def _write_state(state_dir: Path, name: str, state: dict) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / f"{name}.json").write_text(json.dumps(state))


def test_down_never_signals_the_process_of_a_stale_pid_file(tmp_path, capsys):
    from flows.cli import main

    state_dir, other = tmp_path / ".cache" / "stack", _sleeper()
    try:
        time.sleep(0.2)  # exec'd: /proc shows its own command line
        forged = {**stack.identity(other.pid), "start": "1"}  # same command, other start time
        _write_state(state_dir, "prefect", {"pid": other.pid, "url": "http://127.0.0.1:4200",
                                            "cmd": ["prefect", "server", "start"]})
        _write_state(state_dir, "mlflow", {"pid": other.pid, "url": "http://127.0.0.1:5000",
                                           "process": forged})

        assert main(["down", "--root", str(tmp_path)]) == 0

        out = capsys.readouterr().out
        assert other.poll() is None, "visiongate down killed an unrelated process"
        assert out.count("nothing was signalled") == 2, out
        assert not list(state_dir.glob("*.json"))  # stale files removed
    finally:
        other.kill()
        other.wait()


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_stale_mlflow_state_is_never_followed(tmp_path, monkeypatch):
    from flows.cli import use_local_stack

    servers = [HTTPServer(("127.0.0.1", 0), _Healthy) for _ in range(2)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    ours, other = (f"http://127.0.0.1:{s.server_address[1]}" for s in servers)
    proc = _sleeper("--host", "127.0.0.1", "--port", str(servers[0].server_address[1]))
    state_dir = tmp_path / ".cache" / "stack"
    try:
        time.sleep(0.2)
        process = stack.identity(proc.pid)
        for state in ({"pid": proc.pid, "url": other},  # written before identities
                      {"pid": proc.pid, "url": other, "process": {**process, "start": "1"}},
                      {"pid": proc.pid, "url": other, "process": process}):  # not its --port
            _write_state(state_dir, "mlflow", state)
            monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
            use_local_stack(str(tmp_path))
            assert "MLFLOW_TRACKING_URI" not in os.environ, state
        # the control: the live process that was told to listen on `ours` is followed
        _write_state(state_dir, "mlflow", {"pid": proc.pid, "url": ours, "process": process})
        assert stack.running_url(tmp_path, "mlflow") == ours
    finally:
        proc.kill()
        proc.wait()
        for s in servers:
            s.shutdown()


FAKE_MLFLOW = """
import os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
uri = os.environ.get("MLFLOW_BACKEND_STORE_URI", "")
print("backend store:", uri, flush=True)  # as a server may log it
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if uri.startswith("postgresql://") else 500)
        self.end_headers()
HTTPServer(("127.0.0.1", int(sys.argv[sys.argv.index("--port") + 1])), H).serve_forever()
"""


def test_a_store_password_stays_off_command_lines_and_world_readable_files(tmp_path):
    import mlflow.cli

    secret = "pw-" + os.urandom(6).hex()
    uri = f"postgresql://visiongate:{secret}@127.0.0.1:1/mlflow"
    server = stack.Server("mlflow", "127.0.0.1", stack.free_port())
    cmd = stack.command(server, tmp_path, uri, tmp_path / "artifacts")
    state_dir = tmp_path / ".cache" / "stack"
    state_dir.mkdir(parents=True)
    (state_dir / "mlflow.log").write_text("")
    (state_dir / "mlflow.log").chmod(0o644)  # as an older visiongate left it
    # `mlflow server` reads the store URI from this variable when the option is absent
    option = next(p for p in mlflow.cli.server.params if "--backend-store-uri" in p.opts)
    assert option.envvar == stack.SECRET_OPTIONS["--backend-store-uri"]

    fake = [sys.executable, "-c", FAKE_MLFLOW, *cmd[1:]]  # the same options, a stand-in server
    pid = stack.start(server, fake, state_dir, stack.environment(tmp_path), timeout=30)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert secret.encode() not in cmdline and b"--port" in cmdline
        assert secret.encode() in Path(f"/proc/{pid}/environ").read_bytes()  # it did get it
        found = [p for p in tmp_path.rglob("*")
                 if p.is_file() and secret.encode() in p.read_bytes()]
        assert found == [state_dir / "mlflow.log"]  # the server's own log line
        for path in state_dir.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        recorded = stack.read_state(state_dir, "mlflow")["process"]
        assert recorded == stack.identity(pid), (recorded, stack.identity(pid), (
            state_dir / "mlflow.log").read_text()[-2000:])
    finally:
        assert stack.stop(state_dir, "mlflow") is True  # its own server is still stopped
    assert stack.identity(pid) is None
