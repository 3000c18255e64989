"""A throwaway PostgreSQL cluster on a free loopback port (the `postgres` fixture, through
conftest.py): the Debian package's binaries, skipped with a clear reason without them."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from visiongate import stack

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
