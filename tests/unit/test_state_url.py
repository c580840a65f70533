"""The state URL: each accepted form, a clear error for each malformed one, and never the password
in an error, a `repr`, or the message of a server that cannot be reached."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from corral_scheduler.state_db import StateStoreError, open_database
from corral_scheduler.state_url import PostgresState, SqliteState, StateUrlError, parse_state_url, redacted_url

DEFAULT = Path("/home/u/.local/share/corral/state")
PASSWORD = "pw-9f8e7d6c"


@pytest.mark.parametrize("url", [None, "", "   "])
def test_no_url_is_sqlite_in_the_default_directory(url: str | None) -> None:
    assert parse_state_url(url, DEFAULT) == SqliteState(DEFAULT)


def test_an_sqlite_url_names_a_directory() -> None:
    assert parse_state_url("sqlite:///var/lib/corral%20state", DEFAULT) == SqliteState(Path("/var/lib/corral state"))


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://corral@db.internal:6543/corral", ("db.internal", 6543, "corral", "corral")),
    (f"postgres://corral:{PASSWORD}@10.0.0.5/state", ("10.0.0.5", 5432, "state", "corral")),
    ("postgresql://corral@/corral?host=/run/postgresql", ("/run/postgresql", 5432, "corral", "corral")),
    ("postgresql://corral@/corral?host=/run/postgresql&port=5433", ("/run/postgresql", 5433, "corral", "corral")),
    ("POSTGRESQL://u@[::1]:5433/db?sslmode=require", ("::1", 5433, "db", "u")),
])
def test_postgresql_urls(url: str, expected: tuple[str, int, str, str]) -> None:
    location = parse_state_url(url, DEFAULT)
    assert isinstance(location, PostgresState)
    assert (location.host, location.port, location.database, location.user) == expected
    assert location.url == url.strip()
    assert PASSWORD not in repr(location) and PASSWORD not in location.describe()


@pytest.mark.parametrize(("url", "problem"), [
    ("mysql://u@h/db", "scheme 'mysql' is not supported"),
    ("redis://h:6379", "scheme 'redis' is not supported"),
    ("/var/lib/corral", "is not a URL"),
    ("postgresql://u@h:notaport/db", "Port could not be cast"),
    ("postgresql://u@h:99999/db", "out of range"),
    ("postgresql://u@h:5432", "names no database"),
    ("postgresql://u@h:5432/db/extra", "names no database"),
    ("postgresql:///db", "names no host"),
    ("postgresql://u@/db?port=x&host=/tmp", "port 'x' is not a port number"),
    ("postgresql://u@h/db#frag", "no #fragment"),
    ("sqlite://relative/dir", "three slashes"),
    ("sqlite:///dir?mode=ro", "three slashes"),
])
def test_malformed_urls_are_refused_with_the_problem_named(url: str, problem: str) -> None:
    with pytest.raises(StateUrlError, match=problem):
        parse_state_url(url, DEFAULT)


@pytest.mark.parametrize("url", [
    f"postgresql://corral:{PASSWORD}@h:notaport/db",
    f"postgresql://corral:{PASSWORD}@h:5432",
    f"mysql://corral:{PASSWORD}@h/db",
    f"postgresql://corral@h/db?password={PASSWORD}#x",
    f"sqlite://corral:{PASSWORD}@h/dir",
])
def test_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(StateUrlError) as raised:
        parse_state_url(url, DEFAULT)
    assert PASSWORD not in str(raised.value)


def test_redacted_url_masks_both_spellings_of_a_password() -> None:
    assert redacted_url(f"postgresql://corral:{PASSWORD}@h:5432/db?password={PASSWORD}&sslmode=require") == (
        "postgresql://corral:***@h:5432/db?password=***&sslmode=require"
    )


def test_an_unreachable_server_is_named_with_host_and_port_never_the_password() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    location = parse_state_url(f"postgresql://corral:{PASSWORD}@127.0.0.1:{port}/corral", DEFAULT)
    with pytest.raises(StateStoreError) as raised:
        open_database(location, "state")
    message = str(raised.value)
    assert f"127.0.0.1:{port}" in message and "database corral" in message and "refused" in message.lower()
    assert PASSWORD not in message
