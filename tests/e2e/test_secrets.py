"""Secrets at rest and in flight, through a real `corral up`: a state.db of the previous version is
migrated to encrypted values; no secret value reaches a caller's error, a log line, a CLI output or
the state database; `corral secret delete`; the key file's checks at start."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
import traceback
from pathlib import Path

import httpx
import pytest

import corral
import secrets_app
from conftest import Cluster, require_snapshot_prerequisites, start_cluster, wait_for
from corral_protocol.v1 import control_pb2
from e2e_helpers import client_for, deploy

APP = "e2e-secrets"


def write_previous_version_state(home: Path, name: str, values: dict[str, str], create: bool = True) -> None:
    """A secret as the version before encryption stored it: plaintext JSON."""
    state = home / "state"
    state.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(state / "state.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    if create:
        db.execute("CREATE TABLE secrets (name TEXT PRIMARY KEY, values_json TEXT NOT NULL, updated_at REAL NOT NULL)")
    db.execute("INSERT INTO secrets VALUES (?, ?, ?)", (name, json.dumps(values), time.time()))
    db.close()


def state_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (home / "state").iterdir() if p.name.startswith("state.db"))


def full_text(exc: BaseException) -> str:
    """What a caller could print: the exception, its chain and the remote traceback."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


@pytest.mark.timeout(300)
def test_secret_values_stay_out_of_errors_logs_outputs_and_the_database(tmp_path: Path) -> None:
    value = f"corral-e2e-secret-{secrets.token_hex(12)}"
    home = tmp_path / "home"
    write_previous_version_state(home, secrets_app.SECRET_NAME, {secrets_app.SECRET_KEY: value})
    write_previous_version_state(home, secrets_app.SNAP_SECRET_NAME, {"UNUSED": "x"}, create=False)
    assert value.encode() in state_bytes(home)

    cluster = start_cluster(home)
    try:
        # Migrated on start: the key file is the owner's only, the database holds no plaintext.
        assert (home / "secrets.key").stat().st_mode & 0o777 == 0o600
        assert value.encode() not in state_bytes(home)
        cli_outputs = [deploy(cluster, "secrets_app.py", APP)]
        client = client_for(cluster)
        Leaky = corral.Cls.from_name(APP, "Leaky", client=client)
        leaky = Leaky(tag="a")
        assert leaky.has_secret.remote(value) is True  # the secret still works after the migration

        with pytest.raises(RuntimeError) as plain:
            leaky.leak.remote()
        text = full_text(plain.value)
        assert "<secret LEAKY_TOKEN>" in text and value not in text

        with pytest.raises(secrets_app.LeakError) as data:  # the type survives, the value does not
            leaky.leak_data.remote()
        assert data.value.env[secrets_app.SECRET_KEY] == "<secret LEAKY_TOKEN>"
        assert value not in full_text(data.value) and value not in repr(data.value.args)

        marker = f"printed-{secrets.token_hex(4)}"
        assert leaky.print_env.remote(marker) == marker
        wait_for(lambda: cluster.logs().count(marker) >= 2, message="the container's output in the server log")

        with pytest.raises(corral.exception.InitError) as init:
            corral.Cls.from_name(APP, "LeakyEnter", client=client)().ping.remote()
        assert "<secret LEAKY_TOKEN>" in str(init.value) and value not in full_text(init.value)

        answer = httpx.get(f"{cluster.http_url}/{APP}/Leaky-web_leak", timeout=60)
        assert answer.status_code == 500 and "<secret LEAKY_TOKEN>" in answer.text and value not in answer.text

        for args in (("secret", "list"), ("container", "list"), ("app", "list", "--all"), ("node", "list")):
            listed = cluster.corral(*args)
            assert listed.returncode == 0, listed.stderr
            cli_outputs.append(listed.stdout + listed.stderr)
        assert secrets_app.SECRET_NAME in cli_outputs[1]

        # Deleting: running containers keep their values; a new container fails, naming the secret.
        deleted = cluster.corral("secret", "delete", secrets_app.SECRET_NAME)
        assert deleted.returncode == 0, deleted.stderr
        missing = cluster.corral("secret", "delete", secrets_app.SECRET_NAME)
        assert missing.returncode != 0 and "NotFoundError" in missing.stderr and secrets_app.SECRET_NAME in missing.stderr
        cli_outputs += [deleted.stdout + deleted.stderr, missing.stdout + missing.stderr]
        assert cluster.corral("secret", "list").stdout.split() == [secrets_app.SNAP_SECRET_NAME]
        assert leaky.has_secret.remote(value) is True
        with pytest.raises(corral.exception.InitError, match=f"secret '{secrets_app.SECRET_NAME}' not found"):
            Leaky(tag="b").has_secret.remote(value)

        assert value.encode() not in state_bytes(home)
    finally:
        cluster.stop()
    logs = cluster.logs()
    assert marker in logs and "<secret LEAKY_TOKEN>" in logs
    assert value not in logs
    for output in cli_outputs:
        assert value not in output


@pytest.mark.timeout(120)
def test_corral_up_refuses_an_unusable_key_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cluster = start_cluster(home)
    try:
        created = cluster.corral("secret", "create", "kept", "KEY=some-value-123")
        assert created.returncode == 0, created.stderr
    finally:
        cluster.stop()
    key_file = home / "secrets.key"
    os.chmod(key_file, 0o644)
    with pytest.raises(RuntimeError, match="chmod 600"):
        start_cluster(home)
    os.chmod(key_file, 0o600)
    key = key_file.read_bytes()
    key_file.unlink()
    with pytest.raises(RuntimeError, match="is missing; restore it"):
        start_cluster(home)
    assert not key_file.exists()  # never regenerated while encrypted secrets exist
    key_file.write_bytes(key)
    os.chmod(key_file, 0o600)
    cluster = start_cluster(home)
    try:
        assert cluster.corral("secret", "list").stdout.split() == ["kept"]
    finally:
        cluster.stop()


@pytest.mark.timeout(180)
def test_a_snapshot_workers_secrets_are_masked_too(cluster: Cluster) -> None:
    """A snapshot-enabled worker gets its secrets after the dump, with its identity; its errors and
    output are masked all the same."""
    require_snapshot_prerequisites()
    value = f"corral-e2e-snap-secret-{secrets.token_hex(12)}"
    for name, pair in ((secrets_app.SNAP_SECRET_NAME, f"SNAP_LEAKY={value}"), (secrets_app.SECRET_NAME, "UNUSED=x")):
        created = cluster.corral("secret", "create", name, pair)
        assert created.returncode == 0, created.stderr
    deploy(cluster, "secrets_app.py", "e2e-secrets-snap")
    client = client_for(cluster)
    LeakySnap = corral.Cls.from_name("e2e-secrets-snap", "LeakySnap", client=client)
    with pytest.raises(RuntimeError) as raised:
        LeakySnap().leak.remote()

    def dumped() -> bool:  # this worker was dumped: it got its secrets after, with its identity
        listed = client.call(client.stub.ListSnapshots, control_pb2.ListSnapshotsRequest()).snapshots
        return any(s.app_name == "e2e-secrets-snap" for s in listed)

    wait_for(dumped, message="the snapshot of LeakySnap")
    text = full_text(raised.value)
    assert "<secret SNAP_LEAKY>" in text and value not in text
    wait_for(lambda: "snap stdout" in cluster.logs(), message="the container's output in the server log")
    assert value not in cluster.logs()
