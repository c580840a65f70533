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


def test_the_node_channel_notices_a_cut_without_breaking_the_planes_ping_policy() -> None:
    """A silent network cut fails no write for many minutes: the node daemon's channel pings the
    plane to notice one, never more often than the plane accepts (a client pinging too often is
    sent away: "too_many_pings"), and retries connecting every few seconds at most."""
    from corral_runtime.control_channel import NODE_CHANNEL_OPTIONS
    from corral_scheduler.server import SERVER_OPTIONS

    node, server = dict(NODE_CHANNEL_OPTIONS), dict(SERVER_OPTIONS)
    assert node["grpc.keepalive_time_ms"] > server["grpc.http2.min_ping_interval_without_data_ms"]
    assert 0 < node["grpc.keepalive_timeout_ms"] <= 10_000
    assert node["grpc.keepalive_permit_without_calls"] == 1 == server["grpc.keepalive_permit_without_calls"]
    assert node["grpc.max_reconnect_backoff_ms"] <= 5_000


def test_the_ephemeral_app_timeout_is_at_least_two_client_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    from corral_protocol import APP_HEARTBEAT_INTERVAL_S
    from corral_scheduler.server import app_heartbeat_timeout_from_env

    monkeypatch.delenv(env.CORRAL_APP_HEARTBEAT_TIMEOUT_S, raising=False)
    assert app_heartbeat_timeout_from_env() == 60.0
    monkeypatch.setenv(env.CORRAL_APP_HEARTBEAT_TIMEOUT_S, "25")
    assert app_heartbeat_timeout_from_env() == 25.0
    for bad in ("", "x", "nan", "0", "-5", str(APP_HEARTBEAT_INTERVAL_S)):  # one heartbeat late would kill the app
        monkeypatch.setenv(env.CORRAL_APP_HEARTBEAT_TIMEOUT_S, bad)
        with pytest.raises(ValueError, match=env.CORRAL_APP_HEARTBEAT_TIMEOUT_S):
            app_heartbeat_timeout_from_env()
