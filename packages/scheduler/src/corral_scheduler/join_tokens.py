"""Join tokens: credentials that let a machine join as a node and do nothing else.

    book = JoinTokenBook(home / JOIN_TOKENS_FILE)
    token = book.create(description="gpu rack 3", ttl_s=24 * 3600)   # "3f9a1c.Qm...": shown once
    book.check(token)                                                 # None: good for NodeService

kubeadm's bootstrap tokens are the model: `ID.SECRET`, where the id is public (it names the token in
`list` and `revoke`) and only the secret's SHA-256 is stored. The book is a JSON file in the
control plane's home (mode 0600), written by `corral node join-token` on the control plane's host
under a lock and atomically replaced; the running control plane reads it again whenever it changes,
so a revoked token stops working at its next use without a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

JOIN_TOKENS_FILE = "join-tokens.json"
_TOKEN = re.compile(r"^([0-9a-f]{6})\.([A-Za-z0-9_-]{16,128})$")
_ID = re.compile(r"^[0-9a-f]{6}$")


class JoinTokenError(Exception):
    """The join-token file cannot be read or written; the message names the file and why."""


@dataclass(frozen=True)
class JoinToken:
    """One stored join token: its public id and the SHA-256 of its secret, never the secret."""

    token_id: str
    secret_sha256: str
    created_at: float
    expires_at: float = 0.0
    """Unix time after which it is refused; 0 = never."""
    description: str = ""

    def expired(self, now: float) -> bool:
        return bool(self.expires_at) and now >= self.expires_at


def looks_like_join_token(token: str) -> bool:
    """Whether `token` has a join token's shape (`ID.SECRET`); admin tokens never contain a dot."""
    return _TOKEN.match(token) is not None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class JoinTokenBook:
    """The join tokens of one control plane, in one file."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._seen: tuple[int, int, int] | None = None
        self._tokens: dict[str, JoinToken] = {}
        self._load_error = ""

    # --- what the control plane asks, on each NodeService call ---------------------------------

    def check(self, token: str) -> str | None:
        """None when `token` is a valid join token, else why not (safe to tell the caller: it
        names only the public id)."""
        match = _TOKEN.match(token)
        if match is None:
            return "not a join token (the form is ID.SECRET, as `corral node join-token create` prints it)"
        self._refresh()
        if self._load_error:
            return f"the control plane cannot read its join tokens: {self._load_error}"
        token_id, secret = match.groups()
        stored = self._tokens.get(token_id)
        if stored is None or not hmac.compare_digest(stored.secret_sha256, _digest(secret)):
            return (f"join token {token_id} is not valid here: revoked, never created, or its secret is wrong "
                    "(`corral node join-token create` on the control plane's host makes a new one)")
        if stored.expired(self._clock()):
            return f"join token {token_id} expired at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(stored.expires_at))}"
        return None

    def _refresh(self) -> None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            self._seen, self._tokens, self._load_error = None, {}, ""
            return
        seen = (info.st_ino, info.st_mtime_ns, info.st_size)
        if seen == self._seen:
            return
        try:
            self._tokens, self._load_error = self._read(), ""
        except JoinTokenError as err:
            self._tokens, self._load_error = {}, str(err)
        self._seen = seen

    # --- what `corral node join-token` does, on the control plane's host ----------------------

    def create(self, description: str = "", ttl_s: float | None = None) -> str:
        """A new join token, `ID.SECRET`; only its secret's hash is stored, so this is the one time
        anyone sees it."""
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError("a join token's time to live must be positive")
        if len(description) > 200 or any(ord(c) < 32 for c in description):
            raise ValueError("a join token's description is at most 200 printable characters")
        with self._locked() as tokens:
            token_id = secrets.token_hex(3)
            while token_id in tokens:
                token_id = secrets.token_hex(3)
            secret = secrets.token_urlsafe(24)
            now = self._clock()
            tokens[token_id] = JoinToken(token_id, _digest(secret), now, now + ttl_s if ttl_s else 0.0, description)
        return f"{token_id}.{secret}"

    def list(self) -> list[JoinToken]:
        """Every stored join token (expired ones included, until revoked), oldest first."""
        return sorted(self._read().values(), key=lambda t: t.created_at)

    def revoke(self, token_id: str) -> bool:
        """Remove the join token with this id; False when there is none. Nodes that joined with it
        stay joined; it only stops new sessions."""
        if not _ID.match(token_id):
            raise ValueError(f"{token_id!r} is not a join token id (six hex digits, as `corral node join-token list` shows)")
        with self._locked() as tokens:
            return tokens.pop(token_id, None) is not None

    def _read(self) -> dict[str, JoinToken]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as err:
            raise JoinTokenError(f"cannot read {self.path}: {err.strerror}") from None
        try:
            rows = json.loads(text)["tokens"]
            tokens = {str(row["token_id"]): JoinToken(**row) for row in rows}
        except (ValueError, KeyError, TypeError) as err:
            raise JoinTokenError(f"{self.path} is not a join-token file ({err}); fix or remove it") from None
        return tokens

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, JoinToken]]:
        """The tokens, under an exclusive lock, written back atomically (mode 0600) on success."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            tokens = self._read()
            yield tokens
            staging = self.path.with_suffix(f".tmp{os.getpid()}")
            descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as out:
                json.dump({"tokens": [asdict(t) for t in tokens.values()]}, out, indent=1)
            os.replace(staging, self.path)
        finally:
            os.close(lock)
