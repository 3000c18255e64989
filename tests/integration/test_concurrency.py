"""Eight processes run `visiongate promote` at the same moment against one sqlite store.

The versions point at an empty run artifact (no model): this test is about alias moves.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from visiongate import registry, tracking
from visiongate.config import MlflowConfig

pytestmark = pytest.mark.integration
NAME = "shapes-detect"
WORKERS = 8

# Each worker imports everything first, says it is ready, then waits for the common start.
WORKER = """
import sys, time
from pathlib import Path
from flows.cli import main
import visiongate.registry
version, root, sync = sys.argv[1], sys.argv[2], Path(sys.argv[3])
(sync / f"ready-{version}").touch()
while not (sync / "go").exists():
    time.sleep(0.005)
sys.exit(main(["promote", "shapes-detect", version, "--reason", f"worker {version}",
               "--root", root]))
"""


def test_concurrent_promotions_leave_one_champion_and_one_history_chain(tmp_path: Path):
    root, sync = tmp_path / "project", tmp_path / "sync"
    root.mkdir()
    sync.mkdir()
    (root / "params.yaml").write_text("dataset: shapes\n")
    uri = tracking.tracking_uri(root, MlflowConfig())
    run_id = tracking.start_run(uri, tracking.ensure_experiment(uri, root, MlflowConfig()), NAME,
                                {}, {})
    for _ in range(WORKERS + 1):
        registry.register(uri, NAME, f"runs:/{run_id}/model", {"gate.passed": "true"})
    registry.promote(uri, NAME, "1", "initial champion")

    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "LOGNAME": "ci"}
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
    moves = registry.history(uri, NAME)
    assert sorted(int(m["version"]) for m in moves) == list(range(1, WORKERS + 2))
    # one chain: every promotion retired exactly the champion the previous one installed
    for before, after in zip(moves, moves[1:]):
        assert after["replaced"] == before["version"], moves
    assert holders == [moves[-1]["version"]]
    previous = registry.by_alias(uri, NAME, registry.PREVIOUS)
    assert previous is not None and previous.version == moves[-1]["replaced"]
    assert all(m["by"] == "user ci" for m in moves[1:])
