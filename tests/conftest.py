"""Shared fixtures: a real `corral up` cluster in a subprocess, with its own CORRAL_HOME."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral_protocol import env as corral_env

TESTS = Path(__file__).resolve().parent
APPS = TESTS / "apps"
sys.path.insert(0, str(APPS))


CRIU_PATHS = ("/usr/local/sbin/criu", "/usr/sbin/criu", "/sbin/criu")


def in_ci() -> bool:
    """Whether this runs in CI: CI=1 (what `.ci/run` exports) or CI=true (what CI services set)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def criu_binary() -> str | None:
    """The criu installed on this machine, found without the runtime's own code."""
    return shutil.which("criu") or next((p for p in CRIU_PATHS if Path(p).is_file()), None)


def require_snapshot_prerequisites() -> None:
    """Skip (fail under CI) when the machine lacks what memory snapshots need: root and a criu
    binary. Facts of the machine only, never `criu.detect()`, which is code under test: where they
    hold and detection still says no, the test runs and fails."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    if criu_binary() is None:
        missing.append("a criu binary (tools/install-criu installs it)")
    if missing:
        reason = f"memory snapshots need {' and '.join(missing)}"
        if in_ci():
            pytest.fail(f"{reason}; CI must provide them")
        pytest.skip(f"{reason}; under CI (CI=1 or CI=true) this is a failure")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """A `corral up` process. Clients find it through CORRAL_HOME, as users' programs do."""

    home: Path
    port: int
    process: subprocess.Popen[str]
    log_path: Path

    @property
    def url(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        """The web gateway's base URL (its port is picked by the server)."""
        return str(json.loads((self.home / "server.json").read_text())["http_url"])

    @property
    def token(self) -> str:
        return (self.home / "token").read_text().strip()

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("CORRAL_SERVER_URL", None)
        env.pop("CORRAL_TOKEN", None)
        env["CORRAL_HOME"] = str(self.home)
        env["PYTHONPATH"] = os.pathsep.join([str(APPS), env.get("PYTHONPATH", "")])
        return env

    def logs(self) -> str:
        return self.log_path.read_text()

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def corral(self, *args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run the `corral` CLI against this cluster."""
        return subprocess.run(
            [sys.executable, "-m", "corral.cli", *args], env=self.env(), capture_output=True, text=True,
            timeout=timeout, cwd=cwd,
        )

    def python(self, *args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run a Python program as a user would, finding the cluster through CORRAL_HOME."""
        return subprocess.run([sys.executable, *args], env=self.env(), capture_output=True, text=True, timeout=timeout, cwd=cwd)


def start_cluster(home: Path, port: int | None = None, extra_env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> Cluster:
    port = port or free_port()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home.parent / f"{home.name}-corral-up.log"
    env = dict(os.environ, CORRAL_HOME=str(home), PYTHONPATH=os.pathsep.join([str(APPS), os.environ.get("PYTHONPATH", "")]))
    # No warm pool unless a test (tests/e2e/test_warm_pool.py) or the caller's environment asks for one:
    # its containers cost CPU on a 2-core machine, and helpers such as `pids_with` find a container's
    # processes by their initial environment, which a warm container gets only later, on stdin.
    env.setdefault(corral_env.CORRAL_NODE_WARM_POOL, "0")
    env.update(extra_env or {})
    env.pop("CORRAL_SERVER_URL", None)
    env.pop("CORRAL_TOKEN", None)
    log = open(log_path, "a")
    process = subprocess.Popen(
        [sys.executable, "-m", "corral.cli", "up", "--port", str(port), "--http-port", "0", *args], env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    cluster = Cluster(home, port, process, log_path)
    deadline = time.monotonic() + 30
    while not (home / "server.json").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            cluster.stop()
            raise RuntimeError(f"corral up did not start:\n{cluster.logs()}")
        time.sleep(0.05)
    return cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the session; tests isolate themselves by app name and parameters."""
    cluster = start_cluster(tmp_path_factory.mktemp("cluster") / "home")
    previous = os.environ.get("CORRAL_HOME")
    os.environ["CORRAL_HOME"] = str(cluster.home)
    try:
        yield cluster
    finally:
        if previous is None:
            os.environ.pop("CORRAL_HOME", None)
        else:
            os.environ["CORRAL_HOME"] = previous
        cluster.stop()


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of the test's own, for tests that restart or stop it."""
    cluster = start_cluster(tmp_path / "home")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session", autouse=True)
def container_volume(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The one host directory every test cluster's containers see (read-write, at the same path):
    test classes write their events and markers there. Isolated containers see nothing else of
    the host's files, the clusters' CORRAL_HOMEs least of all."""
    root = tmp_path_factory.getbasetemp() / "container-volume"
    root.mkdir(mode=0o777, exist_ok=True)
    os.chmod(root, 0o777)  # containers run as an unprivileged user
    previous = os.environ.get("CORRAL_NODE_VOLUMES")
    os.environ["CORRAL_NODE_VOLUMES"] = str(root)
    try:
        yield root
    finally:
        if previous is None:
            os.environ.pop("CORRAL_NODE_VOLUMES", None)
        else:
            os.environ["CORRAL_NODE_VOLUMES"] = previous


@pytest.fixture
def shared_dir(container_volume: Path, request: pytest.FixtureRequest) -> Path:
    """A directory of this test's own that both the test and its containers can write to."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in request.node.name)[:80]
    path = container_volume / name
    path.mkdir(mode=0o777, exist_ok=True)
    os.chmod(path, 0o777)
    return path


@pytest.fixture
def events(shared_dir: Path) -> Path:
    """A file that test classes' hooks append lines to (its path is passed as a parameter)."""
    path = shared_dir / "events.log"
    path.touch()
    os.chmod(path, 0o666)
    return path


def read_events(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line]


def wait_for(predicate, timeout: float = 30, interval: float = 0.05, message: str = "condition") -> None:  # type: ignore[no-untyped-def]
    """Poll until `predicate()` is true. A deadline, not a timing assertion: it only bounds a hang."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(interval)
