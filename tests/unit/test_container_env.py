"""What a container inherits from its node's environment (an allow-list), and the warm pool's size
setting."""

from __future__ import annotations

import pytest

from corral_protocol import env as corral_env
from corral_runtime.container_launcher import base_env
from corral_runtime.node import warm_pool_size

NODE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC", "PYTHONPATH": "/srv/lib",
    corral_env.CORRAL_MAX_PAYLOAD_BYTES: "1000",
    "AWS_SECRET_ACCESS_KEY": "node-secret", "SOME_NODE_SETTING": "x", "HOME": "/root", "TMPDIR": "/var/tmp",
    "SSH_AUTH_SOCK": "/tmp/agent", corral_env.CORRAL_TOKEN: "admin", corral_env.CORRAL_HOME: "/srv/corral",
    corral_env.CORRAL_SERVER_URL: "grpc://x:1", corral_env.CORRAL_NODE_ISOLATION: "runc",
}


def test_only_the_allow_listed_names_are_inherited() -> None:
    inherited = corral_env.container_base_env(NODE_ENV)
    assert inherited == {"PATH": "/usr/local/bin:/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC",
                         "PYTHONPATH": "/srv/lib", corral_env.CORRAL_MAX_PAYLOAD_BYTES: "1000"}


def test_the_runtime_sets_its_own_home_and_python_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.environ", dict(NODE_ENV))
    isolated = base_env(home="/tmp", sandboxed=True)
    assert isolated["HOME"] == "/tmp" and isolated["PYTHONUNBUFFERED"] == "1" and isolated["PYTHONDONTWRITEBYTECODE"] == "1"
    plain = base_env(home="/work/containers/ct-1", sandboxed=False)
    assert plain["HOME"] == "/work/containers/ct-1" and "PYTHONDONTWRITEBYTECODE" not in plain
    for env in (isolated, plain):
        assert "AWS_SECRET_ACCESS_KEY" not in env and corral_env.CORRAL_TOKEN not in env and "TMPDIR" not in env


@pytest.mark.parametrize(("setting", "environ", "size"), [
    (None, {}, corral_env.DEFAULT_WARM_POOL),
    (None, {corral_env.CORRAL_NODE_WARM_POOL: "5"}, 5),
    (None, {corral_env.CORRAL_NODE_WARM_POOL: "0"}, 0),
    (None, {corral_env.CORRAL_NODE_WARM_POOL: "lots"}, corral_env.DEFAULT_WARM_POOL),
    (None, {corral_env.CORRAL_NODE_WARM_POOL: "-3"}, 0),
    (3, {corral_env.CORRAL_NODE_WARM_POOL: "5"}, 3),
    (0, {}, 0),
])
def test_the_warm_pool_size(monkeypatch: pytest.MonkeyPatch, setting: int | None, environ: dict[str, str], size: int) -> None:
    monkeypatch.delenv(corral_env.CORRAL_NODE_WARM_POOL, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert warm_pool_size(setting) == size
