"""Encryption of secret values at rest: a Fernet key in a file only its owner can read.

The state store seals each secret's values with the key before they reach SQLite, so a copy of
`state.db` (a backup, a stray `scp`) holds no secret value. The key lives in its own file
(`$CORRAL_HOME/secrets.key`, mode 0600), apart from the `state/` directory that holds the database.

Example:
    box = SecretBox.load(home / "secrets.key")      # None: no key file yet
    box = box or SecretBox.create(home / "secrets.key")
    token = box.seal(b"...")
    assert box.open(token) == b"..."
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


class SecretKeyError(Exception):
    """The key file cannot be used (loose mode, corrupted, wrong key for the stored secrets); the
    control plane refuses to start rather than lose or expose secrets."""


class SecretBox:
    """Seals and opens secret values with one Fernet key (AES-128-CBC + HMAC-SHA256)."""

    def __init__(self, fernet: Fernet, key_file: Path) -> None:
        self._fernet = fernet
        self.key_file = key_file

    @classmethod
    def load(cls, key_file: Path) -> SecretBox | None:
        """The box of an existing key file, or None when there is none. Refuses a key file that
        others can read or write, or that does not hold a Fernet key."""
        try:
            fd = os.open(key_file, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return None
        except OSError as err:
            raise SecretKeyError(f"cannot open the secret key file {key_file}: {err.strerror}") from None
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise SecretKeyError(f"the secret key file {key_file} is not a regular file")
            if info.st_mode & 0o077:
                raise SecretKeyError(
                    f"the secret key file {key_file} has mode {stat.S_IMODE(info.st_mode):04o}; it must be readable "
                    f"by its owner only: chmod 600 {key_file}"
                )
            if info.st_uid != os.geteuid():
                raise SecretKeyError(
                    f"the secret key file {key_file} belongs to uid {info.st_uid}, not to this user ({os.geteuid()})"
                )
            data = file.read()
        try:
            fernet = Fernet(data.strip())
        except (ValueError, TypeError):
            raise SecretKeyError(
                f"the secret key file {key_file} is corrupted (it does not hold a Fernet key); restore it from a "
                "backup: without it the stored secrets cannot be read"
            ) from None
        return cls(fernet, key_file)

    @classmethod
    def create(cls, key_file: Path) -> SecretBox:
        """A new random key, written to a new file of mode 0600 (never over an existing one)."""
        key = Fernet.generate_key()
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(key + b"\n")
            file.flush()
            os.fsync(file.fileno())
        return cls(Fernet(key), key_file)

    def seal(self, plaintext: bytes) -> bytes:
        return self._fernet.encrypt(plaintext)

    def open(self, token: bytes) -> bytes:
        """The plaintext of a sealed value; SecretKeyError when this key did not seal it, or the
        value was altered."""
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            raise SecretKeyError(
                f"a stored secret cannot be decrypted with the key in {self.key_file}: the key file was replaced, "
                "or the database was altered; restore the original key file"
            ) from None
