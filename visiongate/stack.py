"""The local stack: a Prefect server and an MLflow tracking server on loopback.

`visiongate up` / `make up` starts both as background processes whose state lives in the
project (Prefect's database in .prefect/, MLflow's backend is the demo's own store);
`visiongate down` / `make down` stops them. Each server's pid, URL and log are under
.cache/stack/. Hosts and ports come from params.yaml's `stack:` section, overridden by
VISIONGATE_{PREFECT,MLFLOW}_{HOST,PORT}.

State files are hostile input: a pid is signalled, and a URL used, only while that pid is
the process visiongate started (same start time and command line as recorded); a stale
file is removed. The store URI (it may hold a password) reaches `mlflow server` through
its environment, never its command line; state files and logs are 0600.
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
# Options whose values may hold credentials -> the variable `mlflow server` reads instead.
SECRET_OPTIONS = {"--backend-store-uri": "MLFLOW_BACKEND_STORE_URI",
                  "--registry-store-uri": "MLFLOW_REGISTRY_STORE_URI"}


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


def command(server: Server, root: Path, tracking_uri: str,
            artifact_root: Path | str) -> list[str]:
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


def private(cmd: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """`cmd` without the values that may hold credentials (a database password in the
    tracking URI), which travel in the environment instead: `ps` shows command lines."""
    cmd, env = list(cmd), dict(env)
    for option, var in SECRET_OPTIONS.items():
        while option in cmd[:-1]:
            i = cmd.index(option)
            env[var] = cmd[i + 1]
            del cmd[i:i + 2]
    return cmd, env


def _write_private(path: Path, text: str) -> None:
    """Write `path` as a 0600 file (replaced whole, never through a symlink)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _open_log(path: Path) -> int:
    """The server's log, appended to, 0600 (it may print its store URI)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)  # one written by an older visiongate may be 0644
    return fd


def start(server: Server, cmd: list[str], state_dir: Path, env: dict[str, str],
          timeout: float = 180) -> int:
    """Start `cmd` in its own session, wait until the server answers; return its pid.
    Its state file (0600) records the pid with the process's start time and command line."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    pid_file, log = state_dir / f"{server.name}.json", state_dir / f"{server.name}.log"
    running = recorded(state_dir, server.name)
    if running:
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
    cmd, env = private(cmd, env)
    out = _open_log(log)
    try:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    finally:
        os.close(out)
    _write_private(pid_file, json.dumps({"pid": proc.pid, "url": server.url, "cmd": cmd,
                                         "process": _exec_identity(proc.pid, cmd)}))
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
    """The state file as written (unchecked: see `recorded`); None if absent or not JSON."""
    path = state_dir / f"{name}.json"
    try:
        state = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def identity(pid: int) -> dict | None:
    """What tells a process from a later one with the same pid: its start time and
    command line (/proc; `ps` where there is none). None: no such process."""
    if Path("/proc/self/stat").exists():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            return None
        return {"start": stat.rsplit(")", 1)[1].split()[19],
                "cmdline": [os.fsdecode(a) for a in argv]}
    ps = subprocess.run(["ps", "-o", "lstart=", "-o", "args=", "-p", str(pid)],
                        capture_output=True, text=True)
    line = ps.stdout.strip()
    return {"start": line[:24], "cmdline": line[24:].split()} if ps.returncode == 0 and line \
        else None


def _exec_identity(pid: int, cmd: list[str], timeout: float = 5.0) -> dict | None:
    """The identity of a just-started process once /proc shows `cmd`'s arguments (a busy
    machine can show the forked parent's command line for a moment; a script's shebang
    makes argv[0] the interpreter, so only the arguments are compared)."""
    deadline = time.monotonic() + timeout
    while True:
        found = identity(pid)
        args = found["cmdline"][-(len(cmd) - 1):] if found and len(cmd) > 1 else None
        if found is None or len(cmd) < 2 or args == list(cmd[1:]) or \
                time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _ours(state: dict) -> bool:
    """The recorded process still runs and is the very one visiongate started."""
    pid = state.get("pid")
    return isinstance(pid, int) and pid > 1 and pid != os.getpid() and \
        state.get("process") is not None and identity(pid) == state["process"]


def recorded(state_dir: Path, name: str) -> dict | None:
    """The state of the `name` server visiongate started, when that process still runs; a
    stale file (process gone, pid reused by another, no identity) is never trusted (`stop`
    removes it, `start` replaces it)."""
    state = read_state(state_dir, name)
    return state if state is not None and _ours(state) else None


def stop(state_dir: Path, name: str, grace: float = 20) -> bool:
    """SIGTERM the server's process group, SIGKILL after `grace` s. False: none was running
    (a stale state file is removed; nothing is signalled unless the process is ours)."""
    state = recorded(state_dir, name)
    (state_dir / f"{name}.json").unlink(missing_ok=True)
    if not state:
        return False
    pid = state["pid"]
    with _gone():
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(pid):  # until exited and reaped
        time.sleep(0.2)
        with _gone():
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child
    if _ours(state):  # still that very process after the grace period
        with _gone():
            os.killpg(pid, signal.SIGKILL)
    return True


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def running_url(root: Path, name: str) -> str | None:
    """The URL of this project's `name` server started by `visiongate up`, if that very
    process still runs, was told to listen there (its own --host/--port) and answers."""
    state = recorded(Project.at(root).stack, name)
    if not state:
        return None
    argv = state["process"]["cmdline"]
    host, port = _option(argv, "--host"), _option(argv, "--port")
    if not host or not (port or "").isdigit() or state.get("url") != f"http://{host}:{port}":
        return None
    return state["url"] if Server(name, host, int(port)).healthy() else None


def prefect_api_url(root: Path) -> str | None:
    """The API URL of this project's running Prefect server (`visiongate up`), if it answers."""
    url = running_url(root, "prefect")
    return url + "/api" if url else None
