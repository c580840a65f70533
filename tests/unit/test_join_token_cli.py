"""`corral node join-token create|list|revoke` on the control plane's host ($CORRAL_HOME)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.cli import main
from corral_protocol import env


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(env.CORRAL_HOME, str(tmp_path))
    return tmp_path


def test_create_list_and_revoke(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["node", "join-token", "create", "--description", "rack 3", "--ttl", "24h"]) == 0
    token = capsys.readouterr().out.splitlines()[0]
    token_id, secret = token.split(".")
    assert main(["node", "join-token", "list"]) == 0
    listed = capsys.readouterr().out
    assert token_id in listed and "rack 3" in listed and "UTC" in listed and secret not in listed
    assert secret not in (home / "join-tokens.json").read_text()
    assert main(["node", "join-token", "revoke", token_id]) == 0
    assert "Revoked join token" in capsys.readouterr().out
    assert main(["node", "join-token", "revoke", token_id]) == 1
    assert f"no join token with id {token_id!r}" in capsys.readouterr().err


@pytest.mark.parametrize("ttl", ["0h", "-1d", "24", "1w", "1e9h"])
def test_a_bad_ttl_is_refused_and_nothing_is_stored(home: Path, ttl: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["node", "join-token", "create", f"--ttl={ttl}"]) == 1
    assert "--ttl" in capsys.readouterr().err
    assert not (home / "join-tokens.json").exists()


def test_a_corrupt_file_is_reported_not_replaced(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (home / "join-tokens.json").write_text("[]")
    assert main(["node", "join-token", "create"]) == 1
    assert "not a join-token file" in capsys.readouterr().err
    assert (home / "join-tokens.json").read_text() == "[]"
    assert main(["node", "join-token", "revoke", "../etc"]) == 1
    assert "not a join token id" in capsys.readouterr().err
