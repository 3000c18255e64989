"""The local stack: a Prefect server and an MLflow tracking server on loopback.

`visiongate up` / `make up` starts both as background processes whose state lives in the
project (Prefect's database in .prefect/, MLflow's backend is the demo's own store);
`visiongate down` / `make down` stops them. Each server's pid, URL and log are under
.cache/stack/. Hosts and ports come from params.yaml's `stack:` section, overridden by
VISIONGATE_{PREFECT,MLFLOW}_{HOST,PORT}.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from visiongate.config import ScheduleConfig, ServerConfig, StackConfig  # noqa: F401 (re-exported)
from visiongate.errors import StackError
from visiongate.paths import Project


def _gone():
    """The process (or its group) may already have exited: nothing left to signal or reap."""
    return contextlib.suppress(ProcessLookupError, ChildProcessError)


HEALTH = {"prefect": "/api/health", "mlflow": "/health"}


@dataclass(frozen=True)
class Server:
    name: str
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def healthy(self, timeout: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(self.url + HEALTH[self.name], timeout=timeout) as r:
                return r.status == 200
        except OSError:
            return False


def servers(cfg: StackConfig) -> dict[str, Server]:
    out = {}
    for name in ("prefect", "mlflow"):
        sc: ServerConfig = getattr(cfg, name)
        env = f"VISIONGATE_{name.upper()}_"
        out[name] = Server(name, os.environ.get(env + "HOST", sc.host),
                           int(os.environ.get(env + "PORT", sc.port)))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin(tool: str) -> str:
    """The console script installed beside this interpreter (the project's venv)."""
    path = Path(sys.executable).parent / tool
    return str(path) if path.exists() else tool


def command(server: Server, root: Path, tracking_uri: str, artifact_root: Path) -> list[str]:
    if server.name == "prefect":
        return [_bin("prefect"), "server", "start", "--host", server.host,
                "--port", str(server.port)]
    return [_bin("mlflow"), "server", "--backend-store-uri", tracking_uri,
            "--artifacts-destination", str(artifact_root), "--host", server.host,
            "--port", str(server.port), "--workers", "1"]


def environment(root: Path) -> dict[str, str]:
    """Servers' environment: project-local Prefect state, no telemetry."""
    # MLflow's job runner (two more processes) serves GenAI features visiongate does not use.
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ,
            "PREFECT_HOME": str(root / ".prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


def start(server: Server, cmd: list[str], state_dir: Path, env: dict[str, str],
          timeout: float = 180) -> int:
    """Start `cmd` in its own session, wait until the server answers; return its pid."""
    state_dir.mkdir(parents=True, exist_ok=True)
    pid_file, log = state_dir / f"{server.name}.json", state_dir / f"{server.name}.log"
    running = read_state(state_dir, server.name)
    if running and alive(running["pid"]):
        if server.healthy():
            return running["pid"]
        raise StackError(f"{server.name} (pid {running['pid']}) is running but {server.url} "
                         "does not answer; `visiongate down` first")
    if server.healthy(timeout=1):
        raise StackError(f"something already answers on {server.url}; choose another port "
                         f"(params.yaml stack.{server.name}.port or "
                         f"VISIONGATE_{server.name.upper()}_PORT)")
    if server.name == "prefect":  # its web UI calls this API (by default :4200, whatever --port)
        env = {**env, "PREFECT_UI_API_URL": server.url + "/api"}
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    pid_file.write_text(json.dumps({"pid": proc.pid, "url": server.url, "cmd": cmd}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pid_file.unlink(missing_ok=True)
            tail = log.read_text(errors="replace")[-3000:]
            raise StackError(f"{server.name} server exited with code {proc.returncode}; "
                             f"its log ({log}) ends:\n{tail}")
        if server.healthy():
            return proc.pid
        time.sleep(0.5)
    stop(state_dir, server.name)
    raise StackError(f"{server.name} server did not answer on {server.url} within "
                     f"{timeout:.0f} s; see {log}")


def read_state(state_dir: Path, name: str) -> dict | None:
    path = state_dir / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(state_dir: Path, name: str, grace: float = 20) -> bool:
    """SIGTERM the server's process group, SIGKILL after `grace` s. False: none was running."""
    state = read_state(state_dir, name)
    (state_dir / f"{name}.json").unlink(missing_ok=True)
    if not state or not alive(state["pid"]):
        return False
    pid = state["pid"]
    with _gone():
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.2)
        with _gone():
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child
    if alive(pid):
        with _gone():
            os.killpg(pid, signal.SIGKILL)
    return True


def running_url(root: Path, name: str) -> str | None:
    """The URL of this project's `name` server started by `visiongate up`, if it answers."""
    state = read_state(Project.at(root).stack, name)
    if not state or not alive(state["pid"]):
        return None
    host, port = state["url"].removeprefix("http://").rsplit(":", 1)
    return state["url"] if Server(name, host, int(port)).healthy() else None


def prefect_api_url(root: Path) -> str | None:
    """The API URL of this project's running Prefect server (`visiongate up`), if it answers."""
    url = running_url(root, "prefect")
    return url + "/api" if url else None
