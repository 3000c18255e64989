"""Real DVC repo, real MLflow sqlite store and Prefect's test harness, in tmp dirs."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pg_cluster import postgres  # noqa: F401  (fixture: tests/integration/pg_cluster.py)

REPO = Path(__file__).resolve().parents[2]

TINY_PARAMS = {
    "dataset": "shapes",
    "synth": {"seed": 1, "image_size": 64, "splits": {"train": 8, "val": 4, "test": 4}},
    "detect": {"epochs": 1, "imgsz": 64, "batch": 4,
               "gate": {"floors": {"map50": 0.0}, "max_drop": {"map50": 1.0},
                        "robustness": {"metric": "map50", "corruptions": {"blur": 1, "fog": 2},
                                       "max_relative_drop": 1.0}}},
    "segment": {"epochs": 1, "imgsz": 64, "batch": 4, "base_channels": 8,
                "gate": {"floors": {"miou": 0.0}, "max_drop": {"miou": 1.0}}},
    # heatmaps, map and suspects: on in test_retrain_flow's first test, off elsewhere (time)
    "insight": {"heatmaps": False, "test_map": False, "suspects": False},
}


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def make_project(root: Path, params: dict) -> Path:
    """A fresh project: the repo's dvc.yaml, a tiny params.yaml, a real `dvc init`."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    # the stage depends on the generator's source: link the package, as in a checkout
    (root / "visiongate").symlink_to(REPO / "visiongate", target_is_directory=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], cwd=root,
                   check=True)
    return root


@pytest.fixture
def tiny_project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project", TINY_PARAMS)



# ---- real servers on free loopback ports (the code `visiongate up` runs) ----------------
@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real `prefect server start` (own PREFECT_HOME) on a free loopback port; yields
    its API URL. Point a client at it with PREFECT_API_URL (a subprocess's env, or
    prefect.settings.temporary_settings)."""
    from visiongate import stack

    state = tmp_path_factory.mktemp("prefect-server")
    server = stack.Server("prefect", "127.0.0.1", stack.free_port())
    stack.start(server, stack.command(server, state, "", state), state, stack.environment(state))
    yield server.url + "/api"
    stack.stop(state, "prefect")


@pytest.fixture
def mlflow_server(tmp_path):
    """`start(tracking_uri, artifacts_dir, port=None) -> Server`: a real `mlflow server`
    on a free (or the given) loopback port; `stop(server)` stops it early; every server
    still running is stopped after the test."""
    from visiongate import stack

    states: dict[int, Path] = {}

    class MlflowServers:
        @staticmethod
        def start(tracking_uri: str, artifacts: Path | str, port: int | None = None
                  ) -> stack.Server:
            """`artifacts`: a folder, or a URI string such as s3://bucket/prefix."""
            server = stack.Server("mlflow", "127.0.0.1", port or stack.free_port())
            state = tmp_path / f"mlflow-server-{server.port}"
            stack.start(server, stack.command(server, state, tracking_uri, artifacts),
                        state, stack.environment(state))
            states[server.port] = state
            return server

        @staticmethod
        def stop(server: stack.Server) -> None:
            stack.stop(states[server.port], "mlflow")

    yield MlflowServers
    for state in states.values():
        stack.stop(state, "mlflow")
