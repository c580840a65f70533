"""Fixtures for every test tree (tests/ and packages/*/tests): the state store's two backends.

`state_location` runs a test once on SQLite files and once on a real PostgreSQL server. The server
is a throwaway cluster this session starts itself (`initdb` into a temporary directory, run as the
`postgres` user when the tests run as root, listening on 127.0.0.1 on a free port) and every test
gets a database of its own. `CORRAL_TEST_POSTGRES_URL` (test-only) names an existing server to use
instead (its user must be allowed to create databases). Without PostgreSQL's binaries (or psycopg) the
PostgreSQL half is skipped, and fails under CI (CI=1 or CI=true), where `.ci/run` installs them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral_scheduler.state_url import PostgresState, SqliteState, StateLocation, parse_state_url

POSTGRES_URL_ENV = "CORRAL_TEST_POSTGRES_URL"
_SERVER_SETTINGS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB "
    "-c max_connections=100"  # a throwaway cluster: durability is not under test here
)


def _in_ci() -> bool:
    # The same test as tests/conftest.py's in_ci (that module is not importable from packages/*/tests).
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _skip_or_fail(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"{reason}; CI must provide it")
    pytest.skip(f"{reason}; under CI (CI=1 or CI=true) this is a failure")


def _postgres_bin() -> Path | None:
    """The directory of PostgreSQL's server binaries (Debian keeps them off PATH)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """A PostgreSQL server the tests may create databases on."""

    admin_url: str

    def new_database(self) -> PostgresState:
        import psycopg

        name = f"corral_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"'.encode())
        parts = urllib.parse.urlsplit(self.admin_url)
        location = parse_state_url(urllib.parse.urlunsplit(parts._replace(path=f"/{name}")), Path("/nonexistent"))
        assert isinstance(location, PostgresState)
        return location


def _start_throwaway_cluster(bin_dir: Path) -> Iterator[PostgresServer]:
    root = Path(tempfile.mkdtemp(prefix="corral-pg-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    pg_ctl = [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run([*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                        "-E", "UTF8", "--locale=C", "--no-sync"], check=True, capture_output=True, timeout=120)
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root} {_SERVER_SETTINGS}"
        started = subprocess.run([*pg_ctl, "-o", options, "-l", str(root / "server.log"), "-w", "-t", "60", "start"],
                                 capture_output=True, text=True, timeout=90)
        if started.returncode != 0:
            log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
            raise RuntimeError(f"the throwaway PostgreSQL did not start: {started.stderr}\n{log}")
        yield PostgresServer(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for this session: `CORRAL_TEST_POSTGRES_URL`'s, else a throwaway one."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _skip_or_fail("the psycopg driver is not installed (tools/dev-install installs corral-scheduler[postgres])")
    given = os.environ.get(POSTGRES_URL_ENV)
    if given:
        yield PostgresServer(given)
        return
    bin_dir = _postgres_bin()
    if bin_dir is None:
        _skip_or_fail("PostgreSQL's server binaries (initdb) are not installed (Debian: apt-get install postgresql)")
    yield from _start_throwaway_cluster(bin_dir)


@pytest.fixture(params=["sqlite", "postgresql"])
def state_location(request: pytest.FixtureRequest, tmp_path: Path) -> StateLocation:
    """Where a store under test keeps its state: SQLite files in the test's directory, or a fresh
    database of the session's PostgreSQL server."""
    if request.param == "sqlite":
        return SqliteState(tmp_path / "state")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.new_database()
