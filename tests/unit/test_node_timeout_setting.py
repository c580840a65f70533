"""The node timeout setting: `corral up --node-timeout` and CORRAL_NODE_TIMEOUT_S refuse what is
not a positive number of seconds, naming the setting; the heartbeat interval stays under it."""

from __future__ import annotations

import pytest

from corral.cli import main
from corral_protocol import env
from corral_scheduler.nodes import NODE_TIMEOUT_S, heartbeat_interval_s
from corral_scheduler.server import node_timeout_from_env


def test_the_default_and_a_valid_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(env.CORRAL_NODE_TIMEOUT_S, raising=False)
    assert node_timeout_from_env() == NODE_TIMEOUT_S == 10.0
    monkeypatch.setenv(env.CORRAL_NODE_TIMEOUT_S, "2.5")
    assert node_timeout_from_env() == 2.5
    assert heartbeat_interval_s(2.5) < 2.5 / 2


@pytest.mark.parametrize("value", ["", "abc", "0", "-3", "nan", "inf", "1e9"])
def test_a_bad_environment_value_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(env.CORRAL_NODE_TIMEOUT_S, value)
    with pytest.raises(ValueError, match=f"{env.CORRAL_NODE_TIMEOUT_S} must be a number of seconds above 0"):
        node_timeout_from_env()


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_corral_up_refuses_a_bad_node_timeout(value: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(env.CORRAL_NODE_TIMEOUT_S, raising=False)
    assert main(["up", "--node-timeout", value]) == 2
    assert "--node-timeout must be a positive number of seconds" in capsys.readouterr().err
