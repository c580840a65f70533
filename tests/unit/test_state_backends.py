"""The state store on each backend (SQLite files, a real PostgreSQL): hostile names and values come
back as they went in, a failed write loses nothing already stored, the schema is created
idempotently and a newer one is refused, bundles of PostgreSQL state need no local file, and the
leader lease goes to one holder at a time; a connection PostgreSQL dropped is opened again."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from corral_protocol.v1 import common_pb2, control_pb2
from corral_scheduler.leader_lease import LeaderLease
from corral_scheduler.state_db import StateStoreError, open_database
from corral_scheduler.state_db_postgres import KEEPALIVES
from corral_scheduler.state_url import PostgresState, StateLocation
from corral_scheduler.store import Store

HOSTILE_NAMES = ["'; DROP TABLE secrets; --", 'x" OR 1=1 --', "%s %(name)s ? $1 \\", "ünïcødé-😀", "a" * 10_000]


def open_store(tmp_path: Path, location: StateLocation, home: str = "home") -> Store:
    return Store(tmp_path / home / "state", location=location)


def definition(name: str, secret: str = "") -> control_pb2.CreateAppRequest:
    options = common_pb2.ServiceOptions(
        secrets=[common_pb2.SecretRef(inline=common_pb2.InlineSecret(values={"K": secret}))] if secret else [],
    )
    return control_pb2.CreateAppRequest(name=name, classes=[common_pb2.ClassDef(name="Model", options=options)])


def test_hostile_names_and_huge_values_round_trip(tmp_path: Path, state_location: StateLocation) -> None:
    store = open_store(tmp_path, state_location)
    huge = {f"KEY_{i}": "v" * 100_000 + "'\";--%s?" for i in range(20)}  # 2 MB of values
    for name in HOSTILE_NAMES:
        store.set_secret(name, {"VALUE": name})
    store.set_secret("huge", huge)
    tokens = {name: store.create_proxy_token(name) for name in HOSTILE_NAMES}
    for i, name in enumerate(HOSTILE_NAMES):
        store.deploy(f"ap-{i}", definition(name))
    store.close()

    reopened = open_store(tmp_path, state_location)
    assert reopened.secret_names() == sorted([*HOSTILE_NAMES, "huge"])
    assert all(reopened.get_secret(name) == {"VALUE": name} for name in HOSTILE_NAMES)
    assert reopened.get_secret("huge") == huge
    assert all(reopened.check_proxy_token(token_id, secret) for token_id, secret in tokens.values())
    assert not reopened.check_proxy_token("'; --", "x") and not reopened.check_proxy_token(tokens[HOSTILE_NAMES[0]][0], "wrong")
    assert sorted(app.name for app in reopened.deployed_apps()) == sorted(HOSTILE_NAMES)
    reopened.close()


def test_a_failed_write_loses_nothing_already_stored(tmp_path: Path, state_location: StateLocation) -> None:
    store = open_store(tmp_path, state_location)
    assert store.deploy("ap-1", definition("app")) == ("ap-1", 1)
    token_id, secret = store.create_proxy_token("ci")
    store.close()
    # A deploy whose sealing fails midway (no place for the key file) rolls its version bump back.
    blocked = Store(tmp_path / "home" / "state", secret_key_file=tmp_path / "keys" / "secrets.key", location=state_location)
    (tmp_path / "keys").write_text("")  # a file where the key's directory would be made
    with pytest.raises(OSError):
        blocked.deploy("ap-2", definition("app", secret="inline-value"))
    blocked.close()
    store = open_store(tmp_path, state_location)
    store.set_secret("api", {"K": "v1"})
    with pytest.raises(ValueError, match="NUL"):
        store.set_secret("api\x00", {"K": "v2"})
    with pytest.raises(ValueError, match="NUL"):
        store.create_proxy_token("ci\x00")
    with pytest.raises(ValueError, match="NUL"):
        store.deploy("ap-3", definition("app\x00"))
    store.close()

    reopened = open_store(tmp_path, state_location)
    assert reopened.get_secret("api") == {"K": "v1"} and reopened.secret_names() == ["api"]
    assert reopened.check_proxy_token(token_id, secret)
    assert [(app.name, app.version) for app in reopened.deployed_apps()] == [("app", 1)]
    assert reopened.deploy("ap-4", definition("app")) == ("ap-1", 2)
    reopened.close()


def test_the_schema_is_created_once_and_a_newer_one_is_refused(tmp_path: Path, state_location: StateLocation) -> None:
    open_store(tmp_path, state_location).close()
    store = open_store(tmp_path, state_location)  # again: nothing to create, nothing lost
    store.set_secret("api", {"K": "v"})
    store.close()
    db = open_database(state_location, "state")
    assert db.schema_version("state") == 1
    db.execute("UPDATE corral_schema SET version = 99 WHERE component = 'state'")
    db.close()
    with pytest.raises(StateStoreError, match="schema version 99, written by a newer Corral; this one knows version 1"):
        open_store(tmp_path, state_location)


def test_bundles_are_kept_with_the_state(tmp_path: Path, state_location: StateLocation) -> None:
    data = b"PK\x03\x04 a code bundle \x00\xff"
    bundle = hashlib.sha256(data).hexdigest()
    store = open_store(tmp_path, state_location)
    assert not store.has_bundle(bundle)
    with pytest.raises(ValueError, match="hashes to"):
        store.put_bundle(bundle, data + b"tampered")
    with pytest.raises(ValueError, match="not a sha256 hex digest"):
        store.has_bundle("../../etc/passwd")
    store.put_bundle(bundle, data)
    store.put_bundle(bundle, data)  # an upload again is no error
    assert store.has_bundle(bundle) and store.bundle_path(bundle).read_bytes() == data
    store.close()
    # PostgreSQL state: a control plane on another machine (another local directory) serves it.
    elsewhere = open_store(tmp_path, state_location, home="elsewhere")
    if isinstance(state_location, PostgresState):
        assert elsewhere.has_bundle(bundle) and elsewhere.bundle_path(bundle).read_bytes() == data
    else:
        assert not elsewhere.has_bundle(bundle)  # SQLite state: the files stay in their own directory
    elsewhere.close()


def test_the_leader_lease_goes_to_one_holder_until_it_expires(tmp_path: Path, state_location: StateLocation) -> None:
    open_store(tmp_path, state_location).close()  # creates the schema
    first_db, second_db = open_database(state_location, "state"), open_database(state_location, "state")
    first, second = LeaderLease(first_db), LeaderLease(second_db)
    assert first.current() is None
    a = first.acquire("plane-a", now=1000.0, ttl_s=10)
    assert a is not None and a.epoch == 1
    assert second.acquire("plane-b", now=1005.0, ttl_s=10) is None  # A's lease runs until 1010
    a = first.renew(a, now=1008.0, ttl_s=10)
    assert a is not None and a.expires_at == 1018.0
    assert second.acquire("plane-b", now=1017.9, ttl_s=10) is None
    assert first.acquire("plane-a", now=1010.0, ttl_s=10) == a.__class__(a.name, "plane-a", 1, 1020.0)  # same tenure

    b = second.acquire("plane-b", now=1020.0, ttl_s=10)  # A missed its renewals: the lease expired
    assert b is not None and b.epoch == 2
    assert first.renew(a, now=1021.0, ttl_s=10) is None  # A learns it was deposed
    assert second.current() == b
    second.release(b)
    a2 = first.acquire("plane-a", now=1022.0, ttl_s=10)  # released: no wait for expiry
    assert a2 is not None and a2.epoch == 3
    with pytest.raises(ValueError, match="non-empty"):
        first.acquire("", now=0, ttl_s=1)
    first_db.close()
    second_db.close()


def test_a_connection_the_server_dropped_is_opened_again(tmp_path: Path, postgres_server) -> None:  # type: ignore[no-untyped-def]
    import psycopg

    location = postgres_server.new_database()
    store = open_store(tmp_path, location)
    store.set_secret("api", {"K": "v1"})
    with psycopg.connect(postgres_server.admin_url, autocommit=True) as admin:  # what a server restart does to it
        admin.execute(b"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                      (location.database,))
    with pytest.raises(psycopg.OperationalError):
        store.set_secret("api", {"K": "v2"})  # the statement that meets the drop fails
    assert store.get_secret("api") == {"K": "v1"}  # the next one reconnects; nothing was lost
    store.set_secret("api", {"K": "v3"})
    assert store.get_secret("api") == {"K": "v3"}
    store.close()


def test_a_statement_and_a_dead_server_are_bounded_in_time(postgres_server) -> None:  # type: ignore[no-untyped-def]
    location: PostgresState = postgres_server.new_database()
    with_options = dataclasses.replace(location, url=f"{location.url}?options=-c%20lock_timeout%3D7000")
    for target in (location, with_options):
        db = open_database(target, "state")
        try:
            assert db.execute("SHOW statement_timeout").fetchone() == ("15s",)
            parameters = db._conn.info.get_parameters()  # type: ignore[attr-defined]
            assert {key: parameters.get(key) for key in KEEPALIVES} == {key: str(value) for key, value in KEEPALIVES.items()}
        finally:
            db.close()
    db = open_database(with_options, "state")
    try:
        assert db.execute("SHOW lock_timeout").fetchone() == ("7s",)  # the URL's own options are kept
    finally:
        db.close()
