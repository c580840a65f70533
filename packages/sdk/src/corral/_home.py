"""Where a Corral server keeps its state, and how clients find a running one."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from corral_protocol import env

SERVER_FILE = "server.json"
TOKEN_FILE = "token"


def corral_home() -> Path:
    """`CORRAL_HOME`, else the user's data directory (XDG on Linux)."""
    explicit = os.environ.get(env.CORRAL_HOME)
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "corral"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "corral"


@dataclass(frozen=True)
class ServerRecord:
    """What a running `corral up` advertises in its home directory."""

    url: str
    pid: int
    ca: str = ""
    """The certificate to pin for a TLS server (a self-signed one), as a path; empty otherwise."""

    def is_alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def read_server_record(home: Path) -> ServerRecord | None:
    try:
        data = json.loads((home / SERVER_FILE).read_text())
        return ServerRecord(url=str(data["url"]), pid=int(data["pid"]), ca=str(data.get("ca") or ""))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_token(home: Path) -> str | None:
    try:
        return (home / TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None
