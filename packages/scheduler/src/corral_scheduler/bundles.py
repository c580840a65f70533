"""Code bundles: content-addressed zip files of an app's source, kept where the state is.

With SQLite state they are files beside the database (`state/bundles/`), as before. With
PostgreSQL they are rows of the `bundles` table, so a control plane on another machine (a restart
elsewhere, a standby) serves every deployed app's code; the local directory is then only a cache
the plane fills on first read.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from corral_scheduler.state_db import Database


def _checked_name(bundle_hash: str) -> str:
    if len(bundle_hash) != 64 or not all(c in "0123456789abcdef" for c in bundle_hash):
        raise ValueError(f"bundle hash {bundle_hash!r} is not a sha256 hex digest")
    return f"{bundle_hash}.zip"


def _write_file(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class FileBundles:
    """Bundles as files in `directory` (SQLite state)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def path(self, bundle_hash: str) -> Path:
        return self.directory / _checked_name(bundle_hash)

    def has(self, bundle_hash: str) -> bool:
        return self.path(bundle_hash).exists()

    def put(self, bundle_hash: str, data: bytes) -> None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != bundle_hash:
            raise ValueError(f"bundle content hashes to {actual}, not the announced {bundle_hash}")
        _write_file(self.path(bundle_hash), data)


class DatabaseBundles(FileBundles):
    """Bundles as rows of `bundles` in the database; `directory` caches what this plane read."""

    SCHEMA = ["CREATE TABLE IF NOT EXISTS bundles (hash TEXT PRIMARY KEY, data {blob} NOT NULL)"]

    def __init__(self, db: Database, cache: Path) -> None:
        super().__init__(cache)
        self.db = db

    def path(self, bundle_hash: str) -> Path:
        """The cached file, fetched from the database when this plane has not read it yet."""
        path = super().path(bundle_hash)
        if not path.exists():
            row = self.db.execute("SELECT data FROM bundles WHERE hash = ?", (bundle_hash,)).fetchone()
            if row is not None:
                data = bytes(row[0])
                if hashlib.sha256(data).hexdigest() == bundle_hash:  # a row altered in the database is not served
                    _write_file(path, data)
        return path

    def has(self, bundle_hash: str) -> bool:
        _checked_name(bundle_hash)
        return self.db.execute("SELECT 1 FROM bundles WHERE hash = ?", (bundle_hash,)).fetchone() is not None

    def put(self, bundle_hash: str, data: bytes) -> None:
        super().put(bundle_hash, data)
        self.db.execute("INSERT INTO bundles (hash, data) VALUES (?, ?) ON CONFLICT (hash) DO NOTHING", (bundle_hash, data))


__all__ = ["DatabaseBundles", "FileBundles"]
