"""Secrets at rest: the state store seals values with a key file only its owner can read, on SQLite
and on PostgreSQL (`state_location`); the migrations of plaintext an earlier version wrote concern
SQLite files only."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from corral_protocol.v1 import common_pb2, control_pb2
from corral_scheduler.secret_box import SecretKeyError
from corral_scheduler.state_db import open_database
from corral_scheduler.state_url import SqliteState, StateLocation
from corral_scheduler.store import Store

VALUE = "sk-live-3b1f0c9e8d7a6b5c"


def db_bytes(state: Path) -> bytes:
    """Everything SQLite keeps on disk for the store: the database, its WAL and shared memory."""
    return b"".join(path.read_bytes() for path in state.iterdir() if path.name.startswith("state.db"))


def open_store(home: Path, location: StateLocation | None = None) -> Store:
    return Store(home / "state", location=location)


def stored_bytes(location: StateLocation) -> bytes:
    """Every value of the secrets and app versions as the database holds them."""
    db = open_database(location, "state")
    try:
        rows = [*db.execute("SELECT * FROM secrets").fetchall(), *db.execute("SELECT * FROM app_versions").fetchall()]
    finally:
        db.close()
    return b"".join(v if isinstance(v, bytes) else str(v).encode() for row in rows for v in row)


def write_previous_version_store(state: Path, secrets: dict[str, dict[str, str]]) -> None:
    """A state.db as the version before encryption wrote it: the plaintext JSON in `values_json`."""
    state.mkdir(parents=True)
    db = sqlite3.connect(state / "state.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE secrets (name TEXT PRIMARY KEY, values_json TEXT NOT NULL, updated_at REAL NOT NULL)")
    for name, values in secrets.items():
        db.execute("INSERT INTO secrets VALUES (?, ?, ?)", (name, json.dumps(values), time.time()))
    db.close()


def test_values_are_encrypted_and_read_back(tmp_path: Path, state_location: StateLocation) -> None:
    store = open_store(tmp_path, state_location)
    assert not (tmp_path / "secrets.key").exists()  # created on first use
    store.set_secret("api", {"API_KEY": VALUE})
    key_file = tmp_path / "secrets.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert store.get_secret("api") == {"API_KEY": VALUE}
    assert store.secret_names() == ["api"]
    store.close()
    assert VALUE.encode() not in stored_bytes(state_location)
    if isinstance(state_location, SqliteState):
        assert VALUE.encode() not in db_bytes(tmp_path / "state")
    reopened = open_store(tmp_path, state_location)
    assert reopened.get_secret("api") == {"API_KEY": VALUE}
    reopened.close()


def test_delete(tmp_path: Path, state_location: StateLocation) -> None:
    store = open_store(tmp_path, state_location)
    store.set_secret("api", {"API_KEY": VALUE})
    assert store.delete_secret("api") is True
    assert store.delete_secret("api") is False
    assert store.get_secret("api") is None
    assert store.secret_names() == []
    store.close()


def test_plaintext_rows_of_the_previous_version_are_migrated(tmp_path: Path) -> None:
    state = tmp_path / "state"
    write_previous_version_store(state, {"api": {"API_KEY": VALUE}, "db": {"USER": "corral", "PASSWORD": "pw-7c1d2e3f"}})
    assert VALUE.encode() in db_bytes(state)
    store = open_store(tmp_path)
    assert store.get_secret("api") == {"API_KEY": VALUE}
    assert store.get_secret("db") == {"USER": "corral", "PASSWORD": "pw-7c1d2e3f"}
    assert store.secret_names() == ["api", "db"]
    store.close()
    assert (tmp_path / "secrets.key").stat().st_mode & 0o777 == 0o600
    contents = db_bytes(state)
    assert VALUE.encode() not in contents and b"pw-7c1d2e3f" not in contents  # no page or WAL frame keeps them
    again = open_store(tmp_path)
    assert again.get_secret("api") == {"API_KEY": VALUE}
    again.close()


def test_a_key_file_others_can_read_is_refused(tmp_path: Path, state_location: StateLocation) -> None:
    store = open_store(tmp_path, state_location)
    store.set_secret("api", {"API_KEY": VALUE})
    store.close()
    key_file = tmp_path / "secrets.key"
    os.chmod(key_file, 0o644)
    with pytest.raises(SecretKeyError, match=r"mode 0644.*chmod 600"):
        open_store(tmp_path, state_location)
    os.chmod(key_file, 0o600)
    assert open_store(tmp_path, state_location).get_secret("api") == {"API_KEY": VALUE}


def test_a_corrupted_key_file_is_refused(tmp_path: Path, state_location: StateLocation) -> None:
    store = open_store(tmp_path, state_location)
    store.set_secret("api", {"API_KEY": VALUE})
    store.close()
    key_file = tmp_path / "secrets.key"
    key_file.write_bytes(b"not a key\n")
    with pytest.raises(SecretKeyError, match="corrupted"):
        open_store(tmp_path, state_location)


def test_another_key_is_refused(tmp_path: Path, state_location: StateLocation) -> None:
    store = open_store(tmp_path, state_location)
    store.set_secret("api", {"API_KEY": VALUE})
    store.close()
    key_file = tmp_path / "secrets.key"
    key_file.unlink()
    other = open_store(tmp_path / "other")  # SQLite: only its key matters
    other.set_secret("x", {"X": "y"})
    other.close()
    os.replace(tmp_path / "other" / "secrets.key", key_file)
    with pytest.raises(SecretKeyError, match="cannot be decrypted"):
        open_store(tmp_path, state_location)


def test_a_missing_key_is_never_silently_regenerated(tmp_path: Path, state_location: StateLocation) -> None:
    store = open_store(tmp_path, state_location)
    store.set_secret("api", {"API_KEY": VALUE})
    store.close()
    (tmp_path / "secrets.key").unlink()
    with pytest.raises(SecretKeyError, match="key file .* is missing"):
        open_store(tmp_path, state_location)
    assert not (tmp_path / "secrets.key").exists()


def test_a_sealed_value_moved_to_another_row_is_refused(tmp_path: Path, state_location: StateLocation) -> None:
    store = open_store(tmp_path, state_location)
    store.set_secret("a", {"K": "value-a"})
    store.set_secret("b", {"K": "value-b"})
    store.close()
    db = open_database(state_location, "state")
    db.execute("UPDATE secrets SET sealed = (SELECT sealed FROM secrets WHERE name = 'a') WHERE name = 'b'")
    db.close()
    reopened = open_store(tmp_path, state_location)
    assert reopened.get_secret("a") == {"K": "value-a"}
    with pytest.raises(SecretKeyError, match="another secret's values"):
        reopened.get_secret("b")


# The apps tables as the version before sealed definitions made them (no `sealed` column).
PREVIOUS_VERSION_APPS_SCHEMA = """
CREATE TABLE apps (app_id TEXT PRIMARY KEY, name TEXT NOT NULL, state TEXT NOT NULL, version INTEGER NOT NULL,
                   created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE app_versions (app_id TEXT NOT NULL REFERENCES apps(app_id), version INTEGER NOT NULL,
                           definition BLOB NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (app_id, version));
"""


def inline_definition(name: str) -> control_pb2.CreateAppRequest:
    options = common_pb2.ServiceOptions(secrets=[common_pb2.SecretRef(inline=common_pb2.InlineSecret(values={"API_KEY": VALUE}))])
    return control_pb2.CreateAppRequest(name=name, classes=[common_pb2.ClassDef(name="Model", options=options)])


def test_definitions_with_inline_secret_values_are_sealed(tmp_path: Path, state_location: StateLocation) -> None:
    store = open_store(tmp_path, state_location)
    store.deploy("ap-1", inline_definition("inline"))
    store.deploy("ap-2", control_pb2.CreateAppRequest(name="plain", classes=[common_pb2.ClassDef(name="Model")]))
    store.close()
    assert VALUE.encode() not in stored_bytes(state_location)
    reopened = open_store(tmp_path, state_location)
    apps = {app.name: app.definition for app in reopened.deployed_apps()}
    assert apps["inline"] == inline_definition("inline")
    assert apps["plain"].classes[0].name == "Model"
    reopened.close()


def test_definitions_of_the_previous_version_with_inline_values_are_migrated(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    db = sqlite3.connect(state / "state.db", isolation_level=None)
    db.executescript(PREVIOUS_VERSION_APPS_SCHEMA)
    db.execute("INSERT INTO apps VALUES ('ap-1', 'inline', 'deployed', 1, 0, 0)")
    db.execute("INSERT INTO app_versions VALUES ('ap-1', 1, ?, 0)", (inline_definition("inline").SerializeToString(),))
    db.close()
    store = open_store(tmp_path)
    assert [app.definition for app in store.deployed_apps()] == [inline_definition("inline")]
    store.close()
    assert VALUE.encode() not in db_bytes(state)
    (tmp_path / "secrets.key").unlink()
    with pytest.raises(SecretKeyError, match="is missing"):
        open_store(tmp_path)
