"""`visiongate serve --model` under load: 1, 4 and 16 concurrent clients on loopback.

Not a test (tests/integration/test_serve_load.py is the bounded check). A YOLOv8n champion
is trained in a child process (benchmarks/bench_predict.py's `prepared_champion`: 1 epoch
on 8 generated images of --size px; speed, not accuracy, is what counts), registered and
promoted in a temporary store, and served by `python -m flows.cli serve` on 127.0.0.1
(params.yaml `serve:` defaults: 20 MB body, 64 rows). visiongate.loadgen then sends one
request per call (one base64 PNG of the test split, params.min_score 0.25):

1. 100 requests from 1 client (warm-up); the server tree's RSS after them;
2. --per-run requests from each of 1, 4 and 16 clients: p50 / p99 latency, throughput,
   errors (non-2xx, exceptions, answers not one record of the image's size);
3. 4 clients up to --total requests in all, the RSS after every --every of them;
4. an oversized body (over serve.max_body_mb) and a malformed one: status and time.

Reference: the same champion's pyfunc `model.predict(DataFrame(image=[<base64>]))` in this
process, before the server starts (no HTTP, JSON or second process), 1 caller, in a worker
thread as the scoring server calls it.

    .venv/bin/python benchmarks/bench_serve.py [--size 64] [--per-run 1000] \
        [--total 10000] [--write]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.bench_predict import prepared_champion  # noqa: E402
from benchmarks.report import machine, update_section  # noqa: E402
from visiongate import loadgen, registry  # noqa: E402
from visiongate.config import ServeConfig  # noqa: E402

CLIENTS = (1, 4, 16)
WARMUP = 100
MIB = 2 ** 20


def request_body(image: Path) -> bytes:
    """One image, as a client sends it."""
    return json.dumps({"dataframe_records": [{"image": base64.b64encode(image.read_bytes())
                                              .decode()}],
                       "params": {"min_score": 0.25}}).encode()


def well_formed(sizes: list[tuple[int, int]]) -> loadgen.Check:
    """loadgen check: one record of request i's image size, with a detections list."""
    def check(index: int, status: int, data: bytes) -> str | None:
        (record,) = json.loads(data)["predictions"]
        got = (record.get("width"), record.get("height"))
        if got != sizes[index % len(sizes)] or not isinstance(record.get("detections"), list):
            return f"request {index}: unexpected record {str(record)[:120]}"
        return None
    return check


def reference_ms(uri: str, name: str, image: Path, cache: Path, n: int = 100) -> list[float]:
    """ms per in-process pyfunc predict of one image (5 warm-up calls not kept)."""
    import mlflow
    import pandas as pd

    os.environ["MLFLOW_TRACKING_URI"] = uri
    version = registry.resolve(uri, f"models:/{name}@champion")
    model = mlflow.pyfunc.load_model(str(registry.checkout_model(uri, version, cache)))
    frame = pd.DataFrame({"image": [base64.b64encode(image.read_bytes()).decode()]})
    times = []
    # in a worker thread, as the scoring server calls predict (asyncio.to_thread): in the
    # main thread, torch's 2 OpenMP threads spun against other jobs here (~0.85 s a call)
    with ThreadPoolExecutor(1) as worker:
        for i in range(n + 5):
            start = time.perf_counter()
            worker.submit(model.predict, frame, params={"min_score": 0.25}).result()
            if i >= 5:
                times.append((time.perf_counter() - start) * 1000)
    return times


def memory(pid: int) -> dict:
    """Summed RSS of the server tree and of its largest process (uvicorn with the model)."""
    time.sleep(0.5)  # let the last answers' buffers go
    per = [loadgen.rss(p) for p in loadgen.tree_pids(pid)]
    return {"tree": sum(per), "largest": max(per)}


def post_once(url: str, body: bytes, headers: dict) -> tuple[int, str, float]:
    """(status, answer, ms) of one request on its own connection."""
    host, port, path = loadgen.check_url(url)
    conn = http.client.HTTPConnection(host, port, timeout=120)
    start = time.perf_counter()
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        text = response.read().decode("utf-8", "replace")
        return response.status, text, (time.perf_counter() - start) * 1000
    finally:
        conn.close()


def limits_checks(url: str) -> list[tuple[str, int, str, float]]:
    """An oversized body (1 MB over serve.max_body_mb) and a malformed one."""
    limit = int(ServeConfig().max_body_mb * MIB)
    oversized = json.dumps({"dataframe_records": [{"image": "A" * (limit + MIB)}]}).encode()
    out = []
    for what, body in ((f"{len(oversized) / MIB:.0f} MB body", oversized),
                       ("malformed JSON `{not json`", b"{not json")):
        status, text, ms = post_once(url, body, {"Content-Type": "application/json"})
        out.append((what, status, text, ms))
    return out


def load(url: str, pid: int, bodies: list[bytes], check, per_run: int, total: int,
         every: int) -> dict:
    """Steps 1-3 of the module doc; results and memory samples keyed by request count."""
    runs, rss, done = {}, {}, 0
    warm = loadgen.run(url, bodies, clients=1, requests=WARMUP, timeout_s=300, check=check)
    done += warm.count
    rss[done] = memory(pid)
    print(f"warm-up: {warm.summary()}; tree RSS {rss[done]['tree'] / MIB:.0f} MiB", flush=True)
    for clients in CLIENTS:
        runs[clients] = loadgen.run(url, bodies, clients=clients, requests=per_run,
                                    timeout_s=600, check=check)
        done += runs[clients].count
        print(runs[clients].summary(), flush=True)
    rss[done] = memory(pid)
    warmed, fill = done, [warm, *runs.values()]
    while done < total:
        step = min(every - done % every, total - done)
        result = loadgen.run(url, bodies, clients=4, requests=step, timeout_s=600, check=check)
        fill.append(result)
        done += result.count
        rss[done] = memory(pid)
        print(f"{done} requests: {result.summary()}; tree RSS "
              f"{rss[done]['tree'] / MIB:.0f} MiB", flush=True)
        if not result.complete:
            break
    return {"runs": runs, "rss": rss, "done": done, "warmed": warmed,
            "errors": sum(r.errors for r in fill), "examples": sum((r.examples for r in fill), [])}


def section(args, rows: dict, ref: list[float], figures: dict, limits: list, image: str,
            command: str, wall: float) -> str:
    """The `## Serving under load` section of BENCHMARKS.md."""
    table = "\n".join(
        f"| {c} | {r.count} | {r.errors} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.throughput:.1f} |"
        for c, r in rows.items())
    ref_p50 = statistics.median(ref)
    rss = figures["rss"]
    first, warmed, last = min(rss), figures["warmed"], max(rss)
    growth = {n: (rss[last]["tree"] - rss[n]["tree"]) / MIB for n in (first, warmed)}
    examples = "; ".join(figures["examples"][:3])
    errors = f"**{figures['errors']}** (goal 0)" + (f"; e.g. {examples}" if examples else "")
    mem = "\n".join(f"| {n} | {m['tree'] / MIB:.0f} | {m['largest'] / MIB:.0f} |"
                    for n, m in sorted(rss.items()))
    checks = "\n".join(f"| {what} | {status} | `{text[:110]}` | {ms:.0f} |"
                       for what, status, text, ms in limits)
    return f"""## Serving under load

`visiongate serve --model models:/bench-detect@champion` (uvicorn, 1 worker, MLflow's scoring
app behind visiongate.rest's guard; params.yaml `serve:` defaults) on 127.0.0.1, loaded by
`visiongate.loadgen` (threads, one keep-alive connection per client) from the same
machine, so clients and server share its cores. Model: YOLOv8n, 1 epoch on 8 generated
images, imgsz {args.size} (the integration test's tiny setup; {args.size} px keeps the
{figures['done']:,} requests within a few minutes on 2 cores). Each request: one {image} PNG
(base64 JSON, {args.body_kb:.1f} KB), `min_score` 0.25; an error is a non-2xx answer, an
exception, or an answer that is not one record of the image's size. Latency: from sending
the request to the last byte of the answer. Reference: the same model's pyfunc
`predict` on the same frame in one process (no HTTP, no JSON), one caller in a worker
thread as the scoring server calls it (`asyncio.to_thread`), 100 calls after 5 warm-up
calls, before the server starts. Torch's default threads (2) on both sides. (Called from
the main thread instead, predict took ~0.85 s here: torch's 2 OpenMP threads spinning
against the other jobs on the 2 cores, as bench_predict.py's `--threads` help notes.)

Machine: {machine()}.

Command: `{command}` ({wall / 60:.1f} min in all)

| clients | requests | errors | p50 ms | p99 ms | throughput req/s |
|---:|---:|---:|---:|---:|---:|
| in-process pyfunc (reference) | {len(ref)} | 0 | {ref_p50:.1f} | {loadgen.percentile(ref, 99):.1f} | {1000 / statistics.mean(ref):.1f} |
{table}

Errors over all {figures['done']:,} requests: {errors}.

Memory: resident set of the server tree (the `visiongate serve` CLI process, which becomes
uvicorn and holds the model), summed from /proc after each step (goal: no growth).
After {first} requests (1 client) vs after {last:,}: **{growth[first]:+.1f} MiB**; after
{warmed:,} (once 4 and 16 clients had run: more threads, each with its own allocator arena
and torch scratch memory) vs after {last:,}: **{growth[warmed]:+.1f} MiB**.

| after requests | server tree RSS MiB | uvicorn (largest process) MiB |
|---:|---:|---:|
{mem}

Limits (status and client-side ms, one request each, after the load):

| request | status | answer | ms |
|---|---:|---|---:|
{checks}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image size = imgsz (px)")
    parser.add_argument("--per-run", type=int, default=1000, help="requests per client count")
    parser.add_argument("--total", type=int, default=10_000, help="requests in all")
    parser.add_argument("--every", type=int, default=2000, help="RSS sample every N requests")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args(argv)
    command = " ".join([".venv/bin/python benchmarks/bench_serve.py",
                        *(argv if argv is not None else sys.argv[1:])])
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="visiongate-bench-serve-") as tmp:
        work = Path(tmp) / "project"
        uri, name, images = prepared_champion(work, args.size, 8)
        (work / "params.yaml").write_text("dataset: shapes\n")  # serve: the defaults
        ref = reference_ms(uri, name, images[0], Path(tmp) / "checkout")
        bodies = [request_body(images[0])]
        args.body_kb = len(bodies[0]) / 1024
        check = well_formed([(args.size, args.size)])
        proc, url = loadgen.serve_model(work, f"models:/{name}@champion", Path(tmp) / "server.log",
                                        {k: v for k, v in os.environ.items()
                                         if k != "MLFLOW_TRACKING_URI"})
        try:
            figures = load(url, proc.pid, bodies, check, args.per_run, args.total, args.every)
            limits = limits_checks(url)
        finally:
            loadgen.stop_server(proc)
    image = f"{args.size}×{args.size}"
    text = section(args, figures["runs"], ref, figures, limits, image, command,
                   time.monotonic() - started)
    print(text)
    if args.write:
        update_section(text)
    return 0 if figures["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
