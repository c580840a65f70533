"""Durable state: deployed apps and their versions, secrets, proxy tokens, code bundles, and durable calls.

The records live in SQLite (WAL, the embedded default) or PostgreSQL, chosen by the state URL
(`corral_scheduler.state_url`); the SQL is written once, against `corral_scheduler.state_db`.
Bundles are in `corral_scheduler.bundles`. Durable calls (spawned inputs and their uncollected
results, `corral_scheduler.durable`) are written through two methods, `write_calls` and
`stored_calls`. Other live state (queues, containers, nodes) is in memory and rebuilt after a
restart. Secret values are sealed with the key in `secret_key_file` (see `secret_box.py`) before
they reach the database, whichever it is: the key never goes into the database.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from corral_protocol.v1 import common_pb2, control_pb2
from corral_scheduler.bundles import DatabaseBundles, FileBundles
from corral_scheduler.effects import CallChange, PersistAttempt, PersistInput, PersistResult
from corral_scheduler.leader_lease import LeaderLease
from corral_scheduler.model import StoredCall
from corral_scheduler.secret_box import SecretBox, SecretKeyError
from corral_scheduler.state_db import open_database
from corral_scheduler.state_url import PostgresState, SqliteState, StateLocation

log = logging.getLogger("corral.scheduler")

SCHEMA_VERSION = 1
# Types in braces are the engine's (`state_db.Dialect`).
_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS apps (
        app_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        state TEXT NOT NULL,
        version INTEGER NOT NULL,
        created_at {real} NOT NULL,
        updated_at {real} NOT NULL
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS apps_deployed_name ON apps(name) WHERE state = 'deployed'",
    """CREATE TABLE IF NOT EXISTS app_versions (
        app_id TEXT NOT NULL REFERENCES apps(app_id),
        version INTEGER NOT NULL,
        definition {blob} NOT NULL,
        created_at {real} NOT NULL,
        sealed INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (app_id, version)
    )""",
    """CREATE TABLE IF NOT EXISTS proxy_tokens (
        token_id TEXT PRIMARY KEY,
        secret_sha256 TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at {real} NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS calls (
        call_id TEXT PRIMARY KEY,
        binding {blob} NOT NULL,
        sealed INTEGER NOT NULL,
        method TEXT NOT NULL,
        args {blob} NOT NULL,
        attempts INTEGER NOT NULL,
        result {blob},
        created_at {real} NOT NULL,
        finished_at {real} NOT NULL{insertion_column}
    )""",
    """CREATE TABLE IF NOT EXISTS secrets (
        name TEXT PRIMARY KEY,
        values_json TEXT NOT NULL,
        updated_at {real} NOT NULL,
        sealed {blob}
    )""",
    *LeaderLease.SCHEMA,
]
# Secrets written by this version: `sealed` holds the Fernet token of {"name", "values"} and
# `values_json` is empty. A row with `sealed` NULL is plaintext from an earlier version; the store
# seals those when it opens. An app version whose definition holds inline secret values
# (`Secret.from_dict`) stores the definition sealed, with `sealed` = 1. SQLite files of the
# versions before these columns get them added on open.
_SEALED_COLUMNS = {
    "secrets": "ALTER TABLE secrets ADD COLUMN sealed {blob}",
    "app_versions": "ALTER TABLE app_versions ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0",
}


def _has_inline_secrets(definition: control_pb2.CreateAppRequest) -> bool:
    return any(
        ref.WhichOneof("source") == "inline" and ref.inline.values for cls in definition.classes for ref in cls.options.secrets
    )


@dataclass(frozen=True)
class DeployedApp:
    app_id: str
    name: str
    version: int
    created_at: float
    definition: control_pb2.CreateAppRequest


class Store:
    """The control plane's durable state: at `location` (default: SQLite files in `directory`);
    `directory` also holds the bundles (SQLite) or the bundle cache (PostgreSQL).

    `secret_key_file` (default: `secrets.key` beside `directory`, i.e. `$CORRAL_HOME/secrets.key`
    for `corral up`, whichever the database) holds the key that seals secret values; it is created, mode 0600, when the
    first secret is stored. Opening refuses (SecretKeyError) a key file that others can read, a
    corrupted one, one that does not open the stored secrets, and a missing one while sealed
    secrets exist: a new key would make them unreadable. A deployed definition that carries inline
    secret values (`Secret.from_dict`) is sealed whole. What an earlier version stored in plaintext
    is sealed here.
    """

    def __init__(self, directory: Path, secret_key_file: Path | None = None, location: StateLocation | None = None) -> None:
        self.directory = directory
        self.location: StateLocation = location or SqliteState(directory)
        self.secret_key_file = secret_key_file or directory.parent / "secrets.key"
        self._db = open_database(self.location, "state")
        self._box: SecretBox | None = None
        try:
            schema = [*_SCHEMA, *(DatabaseBundles.SCHEMA if isinstance(self.location, PostgresState) else [])]
            self._db.ensure_schema("state", SCHEMA_VERSION, schema)
            self.bundles = (DatabaseBundles(self._db, directory / "bundles") if isinstance(self.location, PostgresState)
                            else FileBundles(directory / "bundles"))
            self.lease = LeaderLease(self._db)
            self._open_secrets()
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    # Bundles -------------------------------------------------------------------------------

    def bundle_path(self, bundle_hash: str) -> Path:
        return self.bundles.path(bundle_hash)

    def has_bundle(self, bundle_hash: str) -> bool:
        return self.bundles.has(bundle_hash)

    def put_bundle(self, bundle_hash: str, data: bytes) -> None:
        self.bundles.put(bundle_hash, data)

    # Apps ----------------------------------------------------------------------------------

    def deploy(self, app_id: str, definition: control_pb2.CreateAppRequest) -> tuple[str, int]:
        """Record a new version of a deployed app; returns (app_id, version)."""
        now = time.time()
        with self._db.transaction():
            row = self._db.execute(
                "SELECT app_id, version FROM apps WHERE name = ? AND state = 'deployed'", (definition.name,)
            ).fetchone()
            if row is None:
                version = 1
                self._db.execute(
                    "INSERT INTO apps (app_id, name, state, version, created_at, updated_at) VALUES (?, ?, 'deployed', 1, ?, ?)",
                    (app_id, definition.name, now, now),
                )
            else:
                app_id, version = row[0], row[1] + 1
                self._db.execute("UPDATE apps SET version = ?, updated_at = ? WHERE app_id = ?", (version, now, app_id))
            blob, sealed = self._definition_blob(definition)
            self._db.execute(
                "INSERT INTO app_versions (app_id, version, definition, sealed, created_at) VALUES (?, ?, ?, ?, ?)",
                (app_id, version, blob, sealed, now),
            )
        return app_id, version

    def _definition_blob(self, definition: control_pb2.CreateAppRequest) -> tuple[bytes, int]:
        """The stored form of a definition: sealed when it carries inline secret values."""
        data = definition.SerializeToString()
        if not _has_inline_secrets(definition):
            return data, 0
        return self._secret_box().seal(data), 1

    def mark_stopped(self, app_id: str) -> None:
        with self._db.transaction():
            self._db.execute("UPDATE apps SET state = 'stopped', updated_at = ? WHERE app_id = ?", (time.time(), app_id))

    def deployed_apps(self) -> list[DeployedApp]:
        rows = self._db.execute(
            "SELECT a.app_id, a.name, a.version, a.created_at, v.definition, v.sealed FROM apps a "
            "JOIN app_versions v ON v.app_id = a.app_id AND v.version = a.version WHERE a.state = 'deployed'"
        ).fetchall()
        return [DeployedApp(r[0], r[1], r[2], r[3], self._definition(r[4], r[5])) for r in rows]

    def _definition(self, blob: bytes, sealed: int) -> control_pb2.CreateAppRequest:
        if sealed:
            assert self._box is not None  # opening checked that sealed rows have their key
            blob = self._box.open(blob)
        return control_pb2.CreateAppRequest.FromString(blob)

    def stopped_apps(self) -> list[tuple[str, str, int, float]]:
        rows = self._db.execute("SELECT app_id, name, version, created_at FROM apps WHERE state = 'stopped'").fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    # Durable calls -------------------------------------------------------------------------

    def write_calls(self, changes: list[CallChange]) -> None:
        """Apply one batch of changes to durable calls, in order, in one transaction."""
        with self._db.transaction():
            for change in changes:
                if isinstance(change, PersistInput):
                    call = change.call
                    binding = control_pb2.BindServiceRequest(
                        app_id=call.app_id, class_name=call.class_name, parameters=call.parameters, options=call.override,
                    ).SerializeToString()
                    sealed = any(r.WhichOneof("source") == "inline" and r.inline.values for r in call.override.secrets)
                    if sealed:
                        binding = self._secret_box().seal(binding)
                    self._db.execute(
                        "INSERT INTO calls (call_id, binding, sealed, method, args, attempts, result, created_at, finished_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, NULL, ?, 0) ON CONFLICT (call_id) DO UPDATE SET binding = excluded.binding, "
                        "sealed = excluded.sealed, method = excluded.method, args = excluded.args, attempts = excluded.attempts, "
                        "result = NULL, created_at = excluded.created_at, finished_at = 0",
                        (call.call_id, binding, int(sealed), call.method, call.args.SerializeToString(), call.attempts, call.created_at),
                    )
                elif isinstance(change, PersistAttempt):
                    self._db.execute("UPDATE calls SET attempts = ? WHERE call_id = ?", (change.attempts, change.call_id))
                elif isinstance(change, PersistResult):
                    self._db.execute("UPDATE calls SET result = ?, finished_at = ? WHERE call_id = ?",
                                     (change.result.SerializeToString(), change.finished_at, change.call_id))
                else:
                    self._db.execute("DELETE FROM calls WHERE call_id = ?", (change.call_id,))

    def stored_calls(self) -> list[StoredCall]:
        """Every durable call, oldest first."""
        rows = self._db.execute(
            "SELECT call_id, binding, sealed, method, args, attempts, result, created_at, finished_at FROM calls "
            f"ORDER BY created_at, {self._db.dialect.insertion_order}"
        ).fetchall()
        calls = []
        for call_id, blob, sealed, method, args, attempts, result, created_at, finished_at in rows:
            if sealed and self._box is None:
                log.warning("durable call %s is sealed and the secrets key is missing; it cannot resume", call_id)
                continue
            blob = bytes(blob)
            binding = control_pb2.BindServiceRequest.FromString(self._box.open(blob) if sealed and self._box else blob)
            calls.append(StoredCall(
                call_id=call_id, app_id=binding.app_id, class_name=binding.class_name, parameters=tuple(binding.parameters),
                override=binding.options, method=method, args=common_pb2.Payload.FromString(bytes(args)), created_at=created_at,
                attempts=attempts, result=common_pb2.Result.FromString(bytes(result)) if result is not None else None,
                finished_at=finished_at,
            ))
        return calls

    # Secrets -------------------------------------------------------------------------------

    def _open_secrets(self) -> SecretBox | None:
        """Load the key, check it against what is sealed, and seal what an earlier version stored
        in plaintext (secrets, and definitions with inline secret values)."""
        for table, add_column in _SEALED_COLUMNS.items():
            if "sealed" not in self._db.columns(table):
                self._db.execute(self._db.dialect.ddl(add_column))
        self._box = SecretBox.load(self.secret_key_file)
        sample = self._db.execute("SELECT name, sealed FROM secrets WHERE sealed IS NOT NULL LIMIT 1").fetchone()
        sealed_definition = self._db.execute("SELECT definition FROM app_versions WHERE sealed = 1 LIMIT 1").fetchone()
        if (sample or sealed_definition) and self._box is None:
            raise SecretKeyError(
                f"the state database ({self.location.describe()}) holds encrypted secrets but their key file "
                f"{self.secret_key_file} is missing; restore it from a backup (a new key could not read them)"
            )
        if sample is not None:
            self._unseal(self._secret_box(), sample[0], sample[1])
        elif sealed_definition is not None:
            self._secret_box().open(bytes(sealed_definition[0]))
        plaintext = self._db.execute("SELECT name, values_json FROM secrets WHERE sealed IS NULL").fetchall()
        definitions = [
            (app_id, version, control_pb2.CreateAppRequest.FromString(bytes(blob)))
            for app_id, version, blob in self._db.execute("SELECT app_id, version, definition FROM app_versions WHERE sealed = 0")
        ]
        definitions = [(app_id, version, definition) for app_id, version, definition in definitions if _has_inline_secrets(definition)]
        if plaintext or definitions:
            with self._db.transaction():
                for name, values_json in plaintext:
                    self._db.execute(
                        "UPDATE secrets SET values_json = '', sealed = ? WHERE name = ?",
                        (self._seal(self._secret_box(), name, dict(json.loads(values_json))), name),
                    )
                for app_id, version, definition in definitions:
                    blob, sealed = self._definition_blob(definition)
                    self._db.execute("UPDATE app_versions SET definition = ?, sealed = ? WHERE app_id = ? AND version = ?",
                                     (blob, sealed, app_id, version))
            # No page (and with SQLite no WAL frame) keeps the old plaintext.
            self._db.scrub(["secrets", "app_versions"])
            log.info(
                "encrypted %d secret(s) and %d app version(s) with inline secrets stored in plaintext by an earlier version",
                len(plaintext), len(definitions),
            )
        return self._box

    def _secret_box(self) -> SecretBox:
        """The key, created on first use."""
        if self._box is None:
            self._box = SecretBox.create(self.secret_key_file)
        return self._box

    @staticmethod
    def _seal(box: SecretBox, name: str, values: dict[str, str]) -> bytes:
        # The name is sealed with the values, so a token copied onto another row is refused.
        return box.seal(json.dumps({"name": name, "values": values}).encode())

    @staticmethod
    def _unseal(box: SecretBox, name: str, sealed: bytes) -> dict[str, str]:
        record = json.loads(box.open(bytes(sealed)))
        if record.get("name") != name:
            raise SecretKeyError(f"the stored secret {name!r} holds another secret's values: the database was altered")
        return dict(record["values"])

    def set_secret(self, name: str, values: dict[str, str]) -> None:
        """Create or replace a secret; its values are sealed before they are written."""
        sealed = self._seal(self._secret_box(), name, values)
        with self._db.transaction():
            self._db.execute(
                "INSERT INTO secrets (name, values_json, sealed, updated_at) VALUES (?, '', ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET values_json = '', sealed = excluded.sealed, updated_at = excluded.updated_at",
                (name, sealed, time.time()),
            )

    def get_secret(self, name: str) -> dict[str, str] | None:
        row = self._db.execute("SELECT sealed FROM secrets WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        assert self._box is not None and row[0] is not None  # opening sealed every row, with a key
        return self._unseal(self._box, name, row[0])

    def delete_secret(self, name: str) -> bool:
        """Delete a secret; False when there was none of that name."""
        with self._db.transaction():
            deleted = self._db.execute("DELETE FROM secrets WHERE name = ?", (name,)).rowcount
        return deleted > 0

    def secret_names(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT name FROM secrets ORDER BY name")]

    # Proxy tokens (web endpoints with requires_proxy_auth) ------------------------------------

    def create_proxy_token(self, name: str) -> tuple[str, str]:
        """A new (token id, secret). Only the secret's sha256 is stored: the secret is random, so a
        fast hash is enough (no password stretching needed)."""
        token_id = "ck-" + secrets.token_urlsafe(16)
        secret = "cs-" + secrets.token_urlsafe(32)
        with self._db.transaction():
            self._db.execute(
                "INSERT INTO proxy_tokens (token_id, secret_sha256, name, created_at) VALUES (?, ?, ?, ?)",
                (token_id, hashlib.sha256(secret.encode()).hexdigest(), name, time.time()),
            )
        return token_id, secret

    def check_proxy_token(self, token_id: str, secret: str) -> bool:
        row = self._db.execute("SELECT secret_sha256 FROM proxy_tokens WHERE token_id = ?", (token_id,)).fetchone()
        if row is None:
            return False
        return hmac.compare_digest(row[0], hashlib.sha256(secret.encode()).hexdigest())
