"""Real DVC repo, real MLflow sqlite store and Prefect's test harness, in tmp dirs; real
servers (Prefect, MLflow, PostgreSQL) on free loopback ports."""

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

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
    # serving exports (ONNX, OpenVINO; seconds each): on in test_retrain_flow's first test
    # (test_export_parity covers them directly), off elsewhere
    "serve": {"export": []},
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
    with open(root / ".dvc" / "config", "a") as config:  # `dvc config core.analytics false`
        config.write("    analytics = false\n")
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


def delete_deployments(api: str) -> None:
    """Remove every deployment from the session's Prefect server: `visiongate serve` and
    `visiongate deploy --pool` register the same names, and a served deployment that a
    pool deployment of an earlier test left behind crashes its runs ("Downloading flow
    code from storage at None"). Tests that register deployments call it when done."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        for deployment in client.read_deployments():
            client.delete_deployment(deployment.id)


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


# ---- moto's S3 server and a DVC remote on it (test_s3_remote, test_s3_faults) -------------
S3_BUCKET, S3_SECRET = "visiongate-data", "moto-secret-key-not-for-logs"


@pytest.fixture
def s3(monkeypatch, tmp_path):
    """moto's S3 server (a real S3 API, its own process) on a free loopback port with an
    empty bucket S3_BUCKET; yields its endpoint. The credentials (any value: moto checks
    none) are set in the environment only."""
    import time
    import urllib.request

    import boto3

    from visiongate import stack

    for key, value in {"AWS_ACCESS_KEY_ID": "moto-key", "AWS_SECRET_ACCESS_KEY": S3_SECRET,
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    port = stack.free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "moto.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "moto did not start"
                time.sleep(0.2)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=S3_BUCKET)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def add_dvc_remote(project: Path, endpoint: str) -> Path:
    """The project's default DVC remote `store`: s3://S3_BUCKET/dvc at this S3 endpoint."""
    for cmd in (["remote", "add", "-d", "store", f"s3://{S3_BUCKET}/dvc"],
                ["remote", "modify", "store", "endpointurl", endpoint]):
        subprocess.run([sys.executable, "-m", "dvc", *cmd], cwd=project, check=True,
                       capture_output=True)
    return project


def worker_clone(project: Path, root: Path, dataset: str = "mine") -> Path:
    """What a worker gets from version control: the project files, no data, no DVC cache."""
    root.mkdir()
    for name in ("dvc.yaml", "dvc.lock", "params.yaml"):
        shutil.copy(project / name, root / name)
    (root / "data/raw").mkdir(parents=True)
    shutil.copy(project / f"data/raw/{dataset}.dvc", root / f"data/raw/{dataset}.dvc")
    (root / ".dvc").mkdir()
    shutil.copy(project / ".dvc/config", root / ".dvc/config")
    (root / "visiongate").symlink_to(Path(project / "visiongate").resolve(),
                                     target_is_directory=True)
    return root


# ---- a throwaway PostgreSQL cluster (Debian's package; skipped with a reason without it) --
PG_USER = "postgres"  # the superuser initdb creates; also the system user of the Debian package

def _pg_bin() -> Path:
    """The newest PostgreSQL server binaries of the Debian layout, else those on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: [int(x) for x in Path(p).parts[-3].split(".") if x.isdigit()])
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        pytest.skip("PostgreSQL's initdb not found: install the Debian package `postgresql` "
                    "(`bash tests/system-deps.sh` as root)")
    return Path(initdb).parent


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the package's system user when root."""
    return ["runuser", "-u", PG_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def _pg(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(_as_postgres(cmd), cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n"
                           f"{done.stdout}\n{done.stderr}")


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL cluster on a free loopback port with an empty database
    `mlflow`; yields the port. Its files live outside pytest's (root-only) tmp tree so
    the `postgres` user can reach them."""
    import psycopg2

    from visiongate import stack

    pg_bin = _pg_bin()
    base = Path(tempfile.mkdtemp(prefix="visiongate-pg-"))  # under /tmp: traversable
    data, sockets = base / "data", base / "sockets"
    started = False
    try:
        sockets.mkdir()
        if os.geteuid() == 0:
            _hand_to_postgres_user(base, sockets)
        port = stack.free_port()
        _pg([str(pg_bin / "initdb"), "-D", str(data), "--auth=trust", "-U", PG_USER,
             "--encoding=UTF8", "--no-sync"], base)
        options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        _pg([str(pg_bin / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"),
             "-o", options, "-w", "-t", "60", "start"], base)
        started = True
        conn = psycopg2.connect(host="127.0.0.1", port=port, user=PG_USER, dbname="postgres")
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        try:
            with conn.cursor() as cur:  # not `with conn`: that would open a transaction
                cur.execute("CREATE DATABASE mlflow")
        finally:
            conn.close()
        yield port
    finally:
        if started:
            _pg([str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], base)
        shutil.rmtree(base, ignore_errors=True)


def _hand_to_postgres_user(*paths: Path) -> None:
    try:
        owner = pwd.getpwnam(PG_USER)
    except KeyError:
        pytest.skip(f"no `{PG_USER}` system user (the Debian package `postgresql` creates it; "
                    "`bash tests/system-deps.sh` as root)")
    for path in paths:
        os.chown(path, owner.pw_uid, owner.pw_gid)
