"""Durable state: deployed apps and their versions, secrets, and code bundles.

SQLite (WAL) holds the records; bundles are content-addressed files beside it. Live state
(queues, containers, nodes) is in memory and rebuilt after a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from corral_protocol.v1 import control_pb2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (
    app_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS apps_deployed_name ON apps(name) WHERE state = 'deployed';
CREATE TABLE IF NOT EXISTS app_versions (
    app_id TEXT NOT NULL REFERENCES apps(app_id),
    version INTEGER NOT NULL,
    definition BLOB NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (app_id, version)
);
CREATE TABLE IF NOT EXISTS proxy_tokens (
    token_id TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    values_json TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class DeployedApp:
    app_id: str
    name: str
    version: int
    created_at: float
    definition: control_pb2.CreateAppRequest


class Store:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.bundle_dir = directory / "bundles"
        self.bundle_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(directory / "state.db", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # Bundles -------------------------------------------------------------------------------

    def bundle_path(self, bundle_hash: str) -> Path:
        if len(bundle_hash) != 64 or not all(c in "0123456789abcdef" for c in bundle_hash):
            raise ValueError(f"bundle hash {bundle_hash!r} is not a sha256 hex digest")
        return self.bundle_dir / f"{bundle_hash}.zip"

    def has_bundle(self, bundle_hash: str) -> bool:
        return self.bundle_path(bundle_hash).exists()

    def put_bundle(self, bundle_hash: str, data: bytes) -> None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != bundle_hash:
            raise ValueError(f"bundle content hashes to {actual}, not the announced {bundle_hash}")
        path = self.bundle_path(bundle_hash)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    # Apps ----------------------------------------------------------------------------------

    def deploy(self, app_id: str, definition: control_pb2.CreateAppRequest) -> tuple[str, int]:
        """Record a new version of a deployed app; returns (app_id, version)."""
        now = time.time()
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
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
            self._db.execute(
                "INSERT INTO app_versions (app_id, version, definition, created_at) VALUES (?, ?, ?, ?)",
                (app_id, version, definition.SerializeToString(), now),
            )
        return app_id, version

    def mark_stopped(self, app_id: str) -> None:
        with self._db:
            self._db.execute("UPDATE apps SET state = 'stopped', updated_at = ? WHERE app_id = ?", (time.time(), app_id))

    def deployed_apps(self) -> list[DeployedApp]:
        rows = self._db.execute(
            "SELECT a.app_id, a.name, a.version, a.created_at, v.definition FROM apps a "
            "JOIN app_versions v ON v.app_id = a.app_id AND v.version = a.version WHERE a.state = 'deployed'"
        ).fetchall()
        return [
            DeployedApp(r[0], r[1], r[2], r[3], control_pb2.CreateAppRequest.FromString(r[4])) for r in rows
        ]

    def stopped_apps(self) -> list[tuple[str, str, int, float]]:
        return self._db.execute("SELECT app_id, name, version, created_at FROM apps WHERE state = 'stopped'").fetchall()

    # Secrets -------------------------------------------------------------------------------

    def set_secret(self, name: str, values: dict[str, str]) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO secrets (name, values_json, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET values_json = excluded.values_json, updated_at = excluded.updated_at",
                (name, json.dumps(values), time.time()),
            )

    def get_secret(self, name: str) -> dict[str, str] | None:
        row = self._db.execute("SELECT values_json FROM secrets WHERE name = ?", (name,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def secret_names(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT name FROM secrets ORDER BY name")]

    # Proxy tokens (web endpoints with requires_proxy_auth) ------------------------------------

    def create_proxy_token(self, name: str) -> tuple[str, str]:
        """A new (token id, secret). Only the secret's sha256 is stored: the secret is random, so a
        fast hash is enough (no password stretching needed)."""
        token_id = "ck-" + secrets.token_urlsafe(16)
        secret = "cs-" + secrets.token_urlsafe(32)
        with self._db:
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
