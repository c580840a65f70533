"""Join tokens: created once, stored as hashes, refused when wrong, expired or revoked, and a
broken file refuses join tokens (never crashes, never is overwritten silently)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from corral_scheduler.join_tokens import JoinTokenBook, JoinTokenError, looks_like_join_token


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_created_token_is_valid_and_only_its_hash_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "join-tokens.json"
    book = JoinTokenBook(path)
    token = book.create(description="rack 3")
    assert looks_like_join_token(token)
    token_id, secret = token.split(".")
    assert book.check(token) is None
    assert secret not in path.read_text() and token_id in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (listed,) = book.list()
    assert (listed.token_id, listed.description, listed.expires_at) == (token_id, "rack 3", 0.0)


def test_wrong_secrets_unknown_ids_and_other_shapes_are_refused_with_a_reason(tmp_path: Path) -> None:
    book = JoinTokenBook(tmp_path / "join-tokens.json")
    token = book.create()
    token_id = token.split(".")[0]
    problem = book.check(f"{token_id}.{'x' * 32}")
    assert problem is not None and f"join token {token_id} is not valid here" in problem
    assert "not valid here" in (book.check("abcdef." + "y" * 32) or "")
    assert "not a join token" in (book.check("admin-token-without-a-dot") or "")
    assert not looks_like_join_token("Zz_-" * 10) and not looks_like_join_token("abcdef.short")


def test_a_revoked_token_stops_working_in_a_book_that_already_read_the_file(tmp_path: Path) -> None:
    path = tmp_path / "join-tokens.json"
    plane, cli = JoinTokenBook(path), JoinTokenBook(path)
    token, other = cli.create(), cli.create()
    assert plane.check(token) is None
    assert cli.revoke(token.split(".")[0]) is True
    assert plane.check(token) is not None and plane.check(other) is None
    assert cli.revoke(token.split(".")[0]) is False
    with pytest.raises(ValueError, match="not a join token id"):
        cli.revoke("../../etc")


def test_a_token_expires_after_its_time_to_live(tmp_path: Path) -> None:
    clock = Clock()
    book = JoinTokenBook(tmp_path / "join-tokens.json", clock=clock)
    token = book.create(ttl_s=60)
    assert book.check(token) is None
    clock.now += 61
    assert "expired at" in (book.check(token) or "")
    with pytest.raises(ValueError, match="positive"):
        book.create(ttl_s=0)
    with pytest.raises(ValueError, match="printable"):
        book.create(description="line\nbreak")


def test_a_corrupt_file_refuses_join_tokens_and_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "join-tokens.json"
    book = JoinTokenBook(path)
    token = book.create()
    path.write_text("{not json")
    assert "cannot read its join tokens" in (book.check(token) or "")
    with pytest.raises(JoinTokenError, match="not a join-token file"):
        book.create()
    assert path.read_text() == "{not json"
    path.write_text(json.dumps({"tokens": [{"token_id": "abcdef", "unexpected": 1}]}))
    with pytest.raises(JoinTokenError, match="fix or remove it"):
        book.list()
