"""A small, bounded HTTP load generator for a server on this machine (`visiongate serve`).

    from visiongate import loadgen
    result = loadgen.run("http://127.0.0.1:5001/invocations", body, clients=4, requests=400)
    result.errors, result.p50_ms, result.p99_ms, result.throughput

`clients` threads, each on its own keep-alive connection (http.client), POST the body (or
the bodies, in turn) until `requests` answers are in or `timeout_s` has passed; an error is
a non-2xx answer, an exception (refused, reset, timed out) or an answer `check` refuses.
Bounded: at most MAX_REQUESTS requests, MAX_CLIENTS clients and MAX_SECONDS of wall time,
and only to loopback (127.0.0.1, localhost; anything else is a ValueError): this measures
our own server, it is not a tool to load someone else's.

`tree_rss(pid)` is the resident memory of a process and all its descendants, from /proc
(`visiongate serve --model` becomes uvicorn, which holds the model; its workers, if any,
run beneath it).
Standard library only.
"""

from __future__ import annotations

import http.client
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

MAX_REQUESTS = 20_000
MAX_CLIENTS = 64
MAX_SECONDS = 900.0
LOOPBACK = ("127.0.0.1", "localhost")
EXAMPLES = 5  # distinct error reasons kept as examples

Check = Callable[[int, int, bytes], "str | None"]  # (request index, status, body) -> reason


@dataclass
class LoadResult:
    """What one run measured; latencies in ms, of the answers that came back."""

    requested: int
    clients: int
    count: int = 0                 # requests sent and finished (answered or failed)
    errors: int = 0
    statuses: Counter = field(default_factory=Counter)  # HTTP status -> answers
    examples: list[str] = field(default_factory=list)   # a few distinct error reasons
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 99)

    @property
    def throughput(self) -> float:
        """Finished requests per second of wall time."""
        return self.count / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def complete(self) -> bool:
        """Every requested request was sent and finished before the deadline."""
        return self.count == self.requested

    def summary(self) -> str:
        """One line for a log or an assertion message."""
        return (f"{self.clients} client(s): {self.count}/{self.requested} requests in "
                f"{self.wall_s:.1f} s ({self.throughput:.1f}/s), p50 {self.p50_ms:.1f} ms, "
                f"p99 {self.p99_ms:.1f} ms, {self.errors} error(s) {self.examples}")


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank q-th percentile (0 < q <= 100): the smallest value with at least
    q % of the values at or below it; NaN for no values."""
    if not 0 < q <= 100:
        raise ValueError(f"percentile q must be in (0, 100], got {q}")
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def check_url(url: str) -> tuple[str, int, str]:
    """(host, port, path) of a plain-HTTP loopback URL; ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK or parts.username is not None:
        raise ValueError(f"load is only sent to http://127.0.0.1 or http://localhost, "
                         f"not {url!r}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, parts.port or 80, path


def _bounded(clients: int, requests: int, timeout_s: float) -> None:
    if not 1 <= clients <= MAX_CLIENTS:
        raise ValueError(f"clients must be 1..{MAX_CLIENTS}, got {clients}")
    if not 1 <= requests <= MAX_REQUESTS:
        raise ValueError(f"requests must be 1..{MAX_REQUESTS}, got {requests}")
    if not 0 < timeout_s <= MAX_SECONDS:
        raise ValueError(f"timeout_s must be in (0, {MAX_SECONDS:g}], got {timeout_s}")


class _Shared:
    """The run's state, shared by its client threads under one lock."""

    def __init__(self, result: LoadResult, deadline: float):
        self.result, self.deadline, self.lock, self.next = result, deadline, threading.Lock(), 0

    def take(self) -> int | None:
        """The next request index, or None when all are taken or time is up."""
        with self.lock:
            if self.next >= self.result.requested or time.monotonic() >= self.deadline:
                return None
            self.next += 1
            return self.next - 1

    def record(self, status: int | None, ms: float | None, reason: str | None) -> None:
        with self.lock:
            r = self.result
            r.count += 1
            if status is not None:
                r.statuses[status] += 1
            if ms is not None:
                r.latencies_ms.append(ms)
            if reason is not None:
                r.errors += 1
                if reason not in r.examples and len(r.examples) < EXAMPLES:
                    r.examples.append(reason)


def _client(target: tuple[str, int, str], bodies: Sequence[bytes], headers: dict,
            request_timeout_s: float, check: Check | None, shared: _Shared) -> None:
    """One client: requests on a keep-alive connection, a new one after any failure."""
    host, port, path = target
    conn = None
    while (index := shared.take()) is not None:
        remaining = max(0.1, shared.deadline - time.monotonic())
        if conn is None:
            conn = http.client.HTTPConnection(host, port, timeout=min(request_timeout_s,
                                                                      remaining))
        status, ms, reason = None, None, None
        start = time.perf_counter()
        try:
            conn.request("POST", path, body=bodies[index % len(bodies)], headers=headers)
            response = conn.getresponse()
            status, data = response.status, response.read()
            ms = (time.perf_counter() - start) * 1000
            if not 200 <= status < 300:
                reason = f"HTTP {status}: {data[:200].decode('utf-8', 'replace')}"
            elif check is not None:
                reason = check(index, status, data)
        except (OSError, http.client.HTTPException) as err:
            reason = f"{type(err).__name__}: {err}"[:200]
            conn.close()
            conn = None
        shared.record(status, ms, reason)
    if conn is not None:
        conn.close()


def run(url: str, body: bytes | Sequence[bytes], clients: int = 1, requests: int = 100,
        timeout_s: float = 60.0, *, headers: dict | None = None,
        request_timeout_s: float = 60.0, check: Check | None = None) -> LoadResult:
    """POST `body` (or bodies[i % len(bodies)] as request i) `requests` times from `clients`
    concurrent connections, stopping at `timeout_s` of wall time; see the module doc."""
    target = check_url(url)
    _bounded(clients, requests, timeout_s)
    bodies = [body] if isinstance(body, bytes | bytearray) else list(body)
    if not bodies:
        raise ValueError("no body to send")
    headers = {"Content-Type": "application/json", **(headers or {})}
    result = LoadResult(requested=requests, clients=clients)
    start = time.monotonic()
    shared = _Shared(result, start + timeout_s)
    threads = [threading.Thread(target=_client, daemon=True, name=f"loadgen-{i}",
                                args=(target, bodies, headers, request_timeout_s, check, shared))
               for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:  # each stops taking requests at the deadline; its last may run on
        thread.join(max(0.0, shared.deadline + request_timeout_s - time.monotonic()))
    result.wall_s = time.monotonic() - start
    return result


# ---- memory of a process tree -------------------------------------------------------------
def _parent_pids() -> dict[int, int]:
    """pid -> parent pid of every process /proc shows."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
    return parents


def tree_pids(pid: int) -> list[int]:
    """pid and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for child, parent in _parent_pids().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def rss(pid: int) -> int:
    """Resident memory of one process in bytes (VmRSS), 0 if it has ended."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    line = next((li for li in status.splitlines() if li.startswith("VmRSS:")), None)
    return int(line.split()[1]) * 1024 if line else 0


def tree_rss(pid: int) -> int:
    """Summed resident memory (bytes) of pid and its descendants; pages shared between
    them count once per process, as in `ps`."""
    if not os.path.isdir(f"/proc/{pid}"):
        raise ProcessLookupError(f"no process {pid}")
    return sum(rss(p) for p in tree_pids(pid))


def serve_model(root: Path, model: str, log: Path, env: dict[str, str] | None = None,
                timeout_s: float = 180) -> tuple[subprocess.Popen, str]:
    """`visiongate serve --model MODEL --root ROOT` on a free loopback port, in its own
    process group (the CLI process becomes uvicorn), output to `log`; returns (process,
    invocations URL) once it answers. VISIONGATE_SERVE_* of `env` (default: this process's)
    are dropped: the server takes its limits from ROOT's params.yaml."""
    from visiongate import stack

    port = stack.free_port()
    env = {k: v for k, v in (os.environ if env is None else env).items()
           if not k.startswith("VISIONGATE_SERVE_")}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--model", model,
                                 "--root", str(root), "--port", str(port)],
                                cwd=Path(__file__).resolve().parents[1], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while not stack.Server("mlflow", "127.0.0.1", port).healthy(timeout=1):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            raise RuntimeError(f"the server did not start:\n{Path(log).read_text()[-3000:]}")
        time.sleep(0.3)
    return proc, f"http://127.0.0.1:{port}/invocations"


def stop_server(proc: subprocess.Popen, grace_s: float = 20) -> None:
    """SIGTERM the server's process group, SIGKILL it after `grace_s`."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
