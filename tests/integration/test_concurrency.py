"""Eight processes run `visiongate promote` at the same moment: against one sqlite store
(serialised by a lock file beside it), and through an `mlflow server` on PostgreSQL with a
real `prefect server` (serialised by a Prefect global concurrency limit every writer shares).

The versions point at an empty run artifact (no model): these tests are about alias moves.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import PG_USER  # tests/integration/conftest.py
from visiongate import moves, registry, tracking
from visiongate.config import MlflowConfig

pytestmark = pytest.mark.integration
NAME = "shapes-detect"
WORKERS = 8

# Each worker imports everything first, says it is ready, then waits for the common start.
WORKER = """
import os, sys, time
from pathlib import Path
from flows.cli import main
import visiongate.moves
if os.environ.get("PREFECT_API_URL"):
    import tasks.registry  # the shared lock's module, imported before the start like the rest
version, root, sync = sys.argv[1], sys.argv[2], Path(sys.argv[3])
(sync / f"ready-{version}").touch()
while not (sync / "go").exists():
    time.sleep(0.005)
sys.exit(main(["promote", "shapes-detect", version, "--reason", f"worker {version}",
               "--root", root]))
"""


def test_concurrent_promotions_leave_one_champion_and_one_history_chain(tmp_path: Path):
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text("dataset: shapes\n")
    uri = tracking.tracking_uri(root, MlflowConfig())
    assert uri.startswith("sqlite:")
    _race(uri, root, {}, tmp_path / "sync")


@pytest.mark.server
def test_concurrent_promotions_through_a_tracking_server_on_postgres(
        tmp_path: Path, postgres, mlflow_server, prefect_server, monkeypatch):
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = mlflow_server.start(
        f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{postgres}/mlflow", tmp_path / "artifacts")
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text("dataset: shapes\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    _race(server.url, root, {"MLFLOW_TRACKING_URI": server.url, "PREFECT_API_URL": prefect_server},
          tmp_path / "sync")
    with temporary_settings({PREFECT_API_URL: prefect_server}), \
            get_client(sync_client=True) as client:  # the lock the promotions shared
        limit = client.read_global_concurrency_limit_by_name(f"visiongate-aliases-{NAME}")
    assert (limit.limit, limit.active_slots) == (1, 0)


def _race(uri: str, root: Path, env: dict, sync: Path) -> None:
    """WORKERS promotions of different versions released at the same instant: one champion,
    one unbroken history chain, no error."""
    sync.mkdir()
    run_id = tracking.start_run(uri, tracking.ensure_experiment(uri, root, MlflowConfig()), NAME,
                                {}, {})
    for _ in range(WORKERS + 1):
        registry.register(uri, NAME, f"runs:/{run_id}/model", {"gate.passed": "true"})
    moves.promote(uri, NAME, "1", "initial champion")

    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "LOGNAME": "ci", **env}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(v), str(root), str(sync)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for v in range(2, WORKERS + 2)]
    deadline = time.monotonic() + 180
    while len(list(sync.glob("ready-*"))) < WORKERS and time.monotonic() < deadline:
        assert all(w.poll() is None for w in workers), "a worker died before the start"
        time.sleep(0.05)
    (sync / "go").touch()
    results = [(w.wait(timeout=180), *w.communicate()) for w in workers]

    for code, out, err in results:
        assert code == 0, err
        assert "locked" not in err and "Traceback" not in err, err
    client = MlflowClient(uri)
    holders = [v for v in map(str, range(1, WORKERS + 2))
               if registry.CHAMPION in client.get_model_version(NAME, v).aliases]
    assert len(holders) == 1
    history = moves.history(uri, NAME)
    assert sorted(int(m["version"]) for m in history) == list(range(1, WORKERS + 2))
    # one chain: every promotion retired exactly the champion the previous one installed
    for before, after in zip(history, history[1:]):
        assert after["replaced"] == before["version"], history
    assert holders == [history[-1]["version"]]
    previous = registry.by_alias(uri, NAME, registry.PREVIOUS)
    assert previous is not None and previous.version == history[-1]["replaced"]
    assert all(m["by"] == "user ci" for m in history[1:])
