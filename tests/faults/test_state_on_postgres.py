"""State that outlives a machine: `corral up --state-url postgresql://...` is killed with kill -9 and
a new control plane starts on the same database from a different, empty home (only the admin token
and the secrets key are copied: credentials, not state). The deployed apps, the secret, the proxy
token and the spawned calls come from PostgreSQL; the node daemon, a process of its own, reconnects
by itself. The restart takes the killed plane's leader lease over once it runs out."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx

import corral
from conftest import APPS, Cluster, free_port, start_cluster, wait_for
from corral_protocol.v1 import control_pb2
from e2e.e2e_helpers import client_for, deploy

NAME = "faults-pg-state"
WEB = "faults-pg-web"
BOUND_S = 120


def _node(url: str, token: str, work_dir: Path, home: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, CORRAL_TOKEN=token, CORRAL_HOME=str(home), PYTHONPATH=str(APPS))
    env.pop("CORRAL_SERVER_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "corral_runtime.node_cli", "--server", url, "--name", "pg-node", "--work-dir", str(work_dir)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )


def _connected_nodes(client: corral.Client) -> list[str]:
    return [n.name for n in client.call(client.stub.ListNodes, control_pb2.ListNodesRequest()).nodes]


def test_a_control_plane_restarted_elsewhere_on_the_same_postgresql_loses_nothing(tmp_path: Path, postgres_server) -> None:  # type: ignore[no-untyped-def]
    state_url = postgres_server.new_database().url
    port = free_port()
    args = ("--no-node", "--state-url", state_url)
    lease = {"CORRAL_LEADER_LEASE_S": "3"}  # the restart waits at most this long for the killed plane's lease
    first = start_cluster(tmp_path / "first-home", port, extra_env=lease, args=args)
    restarted: Cluster | None = None
    node = _node(f"grpc://127.0.0.1:{port}", first.token, tmp_path / "node-work", tmp_path / "node-home")
    try:
        client = client_for(first)
        wait_for(lambda: _connected_nodes(client) == ["pg-node"], timeout=60, message="the node to join")
        deploy(first, "deploy_model.py", NAME)
        deploy(first, "web_app.py", WEB)  # no container of it runs before the kill: its bundle comes from the database
        assert first.corral("secret", "create", "pg-secret", "PG_SECRET=value-7f3a").returncode == 0
        created = first.corral("token", "create", "--name", "pg")
        assert created.returncode == 0, created.stderr
        key = re.search(r"Corral-Key: (\S+)", created.stdout).group(1)  # type: ignore[union-attr]
        secret = re.search(r"Corral-Secret: (\S+)", created.stdout).group(1)  # type: ignore[union-attr]
        Model = corral.Cls.from_name(NAME, "Model", client=client)
        collected = Model(tag="collected").bump.spawn()
        assert collected.get(timeout=BOUND_S) == 1
        queued = [Model.with_options(max_containers=1, retries=1)(tag="queued").sleep.spawn(0.5) for _ in range(3)]
        client.close()

        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=30)
        home = tmp_path / "second-home"
        home.mkdir(mode=0o700)
        for credential in ("token", "secrets.key"):  # what a second machine is given, as it would be a TLS key
            shutil.copy2(first.home / credential, home / credential)
        restarted = start_cluster(home, port, extra_env=lease, args=args)
        assert not (home / "state" / "state.db").exists()  # the state is in PostgreSQL, not here
        # It took the dead plane's leader lease over (waiting as a standby if it was still running).
        assert "holds the leader lease (epoch 2)" in restarted.logs()
        client = client_for(restarted)

        wait_for(lambda: _connected_nodes(client) == ["pg-node"], timeout=60, message="the node to reconnect by itself")
        listed = restarted.corral("app", "list")
        assert NAME in listed.stdout and WEB in listed.stdout, listed.stdout
        assert "pg-secret" in restarted.corral("secret", "list").stdout
        assert corral.FunctionCall.from_id(collected.object_id, client=client).get(timeout=BOUND_S) == 1
        assert [corral.FunctionCall.from_id(c.object_id, client=client).get(timeout=BOUND_S) for c in queued] == ["slept"] * 3
        Model = corral.Cls.from_name(NAME, "Model", client=client)
        with_secret = Model.with_options(secrets=[corral.Secret.from_name("pg-secret")])(tag="secret")
        assert with_secret.env.remote("PG_SECRET") == "value-7f3a"  # sealed in PostgreSQL, opened with the copied key
        with httpx.Client(base_url=restarted.http_url, timeout=BOUND_S) as http:
            assert http.get(f"/{WEB}/API-secret", headers={"Corral-Key": key, "Corral-Secret": "cs-wrong"}).status_code == 401
            ok = http.get(f"/{WEB}/API-secret", headers={"Corral-Key": key, "Corral-Secret": secret})
            assert ok.status_code == 200 and ok.json() == "classified"
        client.close()
    finally:
        if node.poll() is None:
            node.send_signal(signal.SIGINT)
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node.kill()
        if restarted is not None:
            restarted.stop()
        first.stop()


def test_corral_up_refuses_a_bad_state_url_in_one_line_without_the_password(tmp_path: Path) -> None:
    """`CORRAL_STATE_URL` is read, and `--state-url` wins over it; every parse error has its unit test."""
    env = dict(os.environ, CORRAL_HOME=str(tmp_path / "home"))
    env.pop("CORRAL_STATE_URL", None)
    unused = free_port()

    def up(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "corral.cli", "up", "--no-node", "--port", "0", "--http-port", "0", *args],
                              env=dict(env, **extra), capture_output=True, text=True, timeout=60)

    from_env = up(CORRAL_STATE_URL="postgresql://corral:pw-5e6f7a@db:5432")
    assert from_env.returncode == 2 and "names no database" in from_env.stderr
    unreachable = up("--state-url", f"postgresql://corral:pw-5e6f7a@127.0.0.1:{unused}/corral",
                     CORRAL_STATE_URL="postgresql://corral:pw-5e6f7a@db:5432")  # the flag wins
    assert unreachable.returncode == 1
    assert f"PostgreSQL database corral at 127.0.0.1:{unused} as user corral" in unreachable.stderr
    assert all("pw-5e6f7a" not in r.stdout + r.stderr for r in (from_env, unreachable))
    assert "Traceback" not in unreachable.stderr
