"""Where the control plane keeps its state, from a URL (`CORRAL_STATE_URL`, `corral up --state-url`).

- unset, or `sqlite:///DIR`: SQLite files in a directory (the embedded default: `$CORRAL_HOME/state`);
- `postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?PARAM=VALUE...]` (or `postgres://`): a
  PostgreSQL server, so the state outlives the machine of the control plane.

A malformed URL or an unknown scheme is refused with an error that names the problem; no error and
no `repr` ever shows the password.

Example:
    location = parse_state_url(os.environ.get(env.CORRAL_STATE_URL), home / "state")
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

POSTGRES_SCHEMES = ("postgresql", "postgres")
DEFAULT_POSTGRES_PORT = 5432


class StateUrlError(ValueError):
    """The state URL cannot be used: malformed, unknown scheme, missing part."""


@dataclass(frozen=True)
class SqliteState:
    """SQLite files (`state.db`, `logs.db`, `schedules.db`) in `directory`."""

    directory: Path

    def describe(self) -> str:
        return f"SQLite in {self.directory}"


@dataclass(frozen=True)
class PostgresState:
    """A PostgreSQL database. `url` holds the password, if any: it is excluded from `repr`."""

    url: str = field(repr=False)
    host: str
    port: int
    database: str
    user: str

    def describe(self) -> str:
        """`PostgreSQL database corral at db.internal:5432 as user corral` (never the password)."""
        return f"PostgreSQL database {self.database} at {self.host}:{self.port} as user {self.user or '(default)'}"


StateLocation = SqliteState | PostgresState


def parse_state_url(url: str | None, default_directory: Path) -> StateLocation:
    """The location a state URL names; None or an empty string is SQLite in `default_directory`."""
    if url is None or not url.strip():
        return SqliteState(default_directory)
    url = url.strip()
    scheme, separator, _ = url.partition("://")
    if not separator:
        raise StateUrlError(f"state URL {redacted_url(url)!r} is not a URL: use postgresql://USER@HOST:PORT/DATABASE or sqlite:///DIR")
    scheme = scheme.lower()
    if scheme == "sqlite":
        return _sqlite(url)
    if scheme in POSTGRES_SCHEMES:
        return _postgres(url)
    raise StateUrlError(
        f"state URL scheme {scheme!r} is not supported: use postgresql:// (or postgres://) for PostgreSQL, "
        "sqlite:/// for SQLite files"
    )


def _sqlite(url: str) -> SqliteState:
    parts = urllib.parse.urlsplit(url)
    if parts.netloc or not parts.path.startswith("/") or parts.query or parts.fragment:
        raise StateUrlError(f"state URL {redacted_url(url)!r}: an SQLite URL is sqlite:///ABSOLUTE/DIRECTORY (three slashes, no host)")
    return SqliteState(Path(urllib.parse.unquote(parts.path)))


def _postgres(url: str) -> PostgresState:
    shown = redacted_url(url)
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as err:  # a port that is not a number, or out of range
        raise StateUrlError(f"state URL {shown!r}: {_without_secret(str(err), url)}") from None
    if parts.fragment:
        raise StateUrlError(f"state URL {shown!r}: a PostgreSQL URL has no #fragment")
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    host = parts.hostname or (query.get("host") or [""])[0]
    if not host:
        raise StateUrlError(f"state URL {shown!r} names no host: postgresql://USER@HOST:PORT/DATABASE")
    database = urllib.parse.unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise StateUrlError(f"state URL {shown!r} names no database (or a path): postgresql://USER@HOST:PORT/DATABASE")
    if port is None and query.get("port"):
        raw_port = query["port"][0]
        if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
            raise StateUrlError(f"state URL {shown!r}: port {raw_port!r} is not a port number")
        port = int(raw_port)
    return PostgresState(url=url, host=host, port=port or DEFAULT_POSTGRES_PORT, database=database,
                         user=urllib.parse.unquote(parts.username or ""))


def redacted_url(url: str) -> str:
    """The URL with its password (between `user:` and `@`, and any `password=` parameter) masked."""
    scheme, separator, rest = url.partition("://")
    if separator:
        authority, slash, tail = rest.partition("/")
        credentials, at, hostport = authority.rpartition("@")
        if at and ":" in credentials:
            credentials = credentials.split(":", 1)[0] + ":***"
        url = f"{scheme}{separator}{credentials}{at}{hostport}{slash}{tail}"
    base, question, query = url.partition("?")
    if question:
        fields = [
            f"{name}=***" if name.lower() == "password" else f"{name}{eq}{value}"
            for name, eq, value in (item.partition("=") for item in query.split("&"))
        ]
        url = base + question + "&".join(fields)
    return url


def _without_secret(message: str, url: str) -> str:
    """`message` with the URL's password, wherever it appears, masked."""
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        password = None
    query_passwords = urllib.parse.parse_qs(url.partition("?")[2]).get("password", [])
    for secret in (password, *query_passwords):
        if secret:
            message = message.replace(secret, "***").replace(urllib.parse.unquote(secret), "***")
    return message


def scrub_password(message: str, location: PostgresState) -> str:
    """`message` (a driver's error) with the location's password masked wherever it appears."""
    return _without_secret(message, location.url)


__all__ = [
    "DEFAULT_POSTGRES_PORT", "PostgresState", "SqliteState", "StateLocation", "StateUrlError", "parse_state_url",
    "redacted_url", "scrub_password",
]
