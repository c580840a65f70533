"""End-to-end: bearer tokens. The admin token (file mode 0600) guards the control API; a wrong
token is refused; a container's own token only opens that container's WorkerSession."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

import auth_app
import corral
from auth_app import AuthIdentity
from conftest import Cluster, start_cluster, wait_for
from corral.exception import AuthError
from corral_protocol.v1 import control_pb2, control_pb2_grpc, node_pb2, node_pb2_grpc, worker_pb2, worker_pb2_grpc

# Containers that stay up for the whole test, so their tokens stay valid while it uses them.
Lasting = AuthIdentity.with_options(scaledown_window=120)


def _target(cluster: Cluster) -> str:
    return cluster.url.split("://", 1)[1]


def _metadata(token: str | None) -> list[tuple[str, str]]:
    metadata = [("corral-protocol-version", "1")]
    if token is not None:
        metadata.append(("authorization", f"Bearer {token}"))
    return metadata


@pytest.fixture(scope="module")
def running(cluster: Cluster) -> Iterator[corral.App]:
    with auth_app.app.run():
        yield auth_app.app


@pytest.fixture
def channel(cluster: Cluster) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(_target(cluster)) as ch:
        yield ch


# The admin token -----------------------------------------------------------------------------------


def test_token_file_is_private(cluster: Cluster) -> None:
    token_file = cluster.home / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert len(cluster.token) >= 32
    assert stat.S_IMODE(cluster.home.stat().st_mode) & 0o077 == 0


@pytest.mark.timeout(120)
def test_loose_token_file_is_made_private(tmp_path: Path) -> None:
    """A token file someone wrote with loose permissions is used, and tightened to 0600."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "token").write_text("a-token-written-by-hand-0123456789abcdef\n")
    os.chmod(home / "token", 0o644)
    cluster = start_cluster(home)
    try:
        assert stat.S_IMODE((home / "token").stat().st_mode) == 0o600
        with grpc.insecure_channel(_target(cluster)) as ch:
            control_pb2_grpc.ControlServiceStub(ch).ListApps(
                control_pb2.ListAppsRequest(), metadata=_metadata("a-token-written-by-hand-0123456789abcdef"), timeout=10
            )
    finally:
        cluster.stop()


class _Recorder(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor):
    """Records the method and metadata of every call made through a channel."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []

    def _record(self, details: Any) -> None:
        self.calls.append((details.method, dict(details.metadata or ())))

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        self._record(details)
        return continuation(details, request)

    def intercept_stream_unary(self, continuation, details, request_iterator):  # type: ignore[no-untyped-def]
        self._record(details)
        return continuation(details, request_iterator)


@pytest.mark.timeout(120)
def test_every_sdk_call_carries_the_bearer_token(cluster: Cluster) -> None:
    client = corral.Client(cluster.url, cluster.token)
    recorder = _Recorder()
    client._channel = grpc.intercept_channel(client._channel, recorder)
    client.stub = control_pb2_grpc.ControlServiceStub(client._channel)
    try:
        with auth_app.app.run(client=client):
            assert AuthIdentity(tag="recorded").identity.remote()["container_id"]
    finally:
        client.close()
    methods = [m for m, _ in recorder.calls]
    for expected in ("HasBundle", "CreateApp", "BindService", "Invoke", "StopApp"):
        assert any(m.endswith("/" + expected) for m in methods), (expected, methods)
    for method, metadata in recorder.calls:
        assert metadata.get("authorization") == f"Bearer {cluster.token}", method
        assert metadata.get("corral-protocol-version") == "1", method


@pytest.mark.timeout(60)
@pytest.mark.parametrize("token", [None, "", "wrong", "Bearer"])
def test_missing_or_wrong_token_is_unauthenticated(cluster: Cluster, channel: grpc.Channel, token: str | None) -> None:
    stub = control_pb2_grpc.ControlServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.ListApps(control_pb2.ListAppsRequest(), metadata=_metadata(token), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # The node API is guarded by the same token.
    with pytest.raises(grpc.RpcError) as info:
        node_pb2_grpc.NodeServiceStub(channel).RegisterNode(
            node_pb2.RegisterNodeRequest(name="intruder"), metadata=_metadata(token), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.timeout(60)
def test_token_without_bearer_scheme_is_unauthenticated(cluster: Cluster, channel: grpc.Channel) -> None:
    stub = control_pb2_grpc.ControlServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.ListApps(
            control_pb2.ListAppsRequest(),
            metadata=[("corral-protocol-version", "1"), ("authorization", cluster.token)],
            timeout=10,
        )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.timeout(60)
def test_sdk_wrong_token_is_auth_error(cluster: Cluster) -> None:
    bad = corral.Client(cluster.url, "wrong")
    try:
        with pytest.raises(AuthError, match="refused the token"):
            corral.Cls.from_name("auth-anything", "AuthIdentity", client=bad)().identity.remote()
        with pytest.raises(AuthError):
            with auth_app.app.run(client=bad):
                pass  # pragma: no cover
        assert auth_app.app.running is None
    finally:
        bad.close()


@pytest.mark.timeout(60)
def test_sdk_wrong_token_from_environment_is_auth_error(cluster: Cluster) -> None:
    """CORRAL_SERVER_URL + a wrong CORRAL_TOKEN, as a user's program would see it."""
    env = cluster.env()
    env["CORRAL_SERVER_URL"] = cluster.url
    env["CORRAL_TOKEN"] = "wrong"
    import subprocess
    import sys

    program = (
        "import corral\n"
        "from corral.exception import AuthError\n"
        "try:\n"
        "    corral.Cls.from_name('auth-anything', 'X')().m.remote()\n"
        "except AuthError as err:\n"
        "    print('AUTH-ERROR', err)\n"
    )
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60)
    assert "AUTH-ERROR" in done.stdout, done.stdout + done.stderr


# Container tokens -----------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_container_env_has_its_own_token_only(running: corral.App, cluster: Cluster) -> None:
    identity = Lasting(tag="env").identity.remote()
    env = identity["env"]
    assert "CORRAL_TOKEN" not in env
    assert "CORRAL_HOME" not in env
    assert identity["container_token"] != cluster.token
    assert not any(cluster.token in value for value in env.values()), "the admin token leaked into the container"
    assert identity["container_id"].startswith("ct")


@pytest.mark.timeout(120)
def test_container_token_may_only_make_calls_and_never_use_the_node_service(running: corral.App, cluster: Cluster, channel: grpc.Channel) -> None:
    """A container's token is its code's credential for calls (issue 14): lookup, bind, invoke,
    results, cancel. Everything else on the control service is refused, the node service too."""
    identity = Lasting(tag="control").identity.remote()
    metadata = _metadata(identity["container_token"])
    control = control_pb2_grpc.ControlServiceStub(channel)
    for call, request in (
        (control.ListApps, control_pb2.ListAppsRequest()),
        (control.ListContainers, control_pb2.ListContainersRequest()),
        (control.ListSecrets, control_pb2.ListSecretsRequest()),
        (control.DeleteSecret, control_pb2.DeleteSecretRequest(name="any")),
        (control.CreateProxyToken, control_pb2.CreateProxyTokenRequest(name="any")),
        (control.StopApp, control_pb2.StopAppRequest(app="auth-app")),
        (control.CordonNode, control_pb2.CordonNodeRequest(node="any")),
        (control.UncordonNode, control_pb2.UncordonNodeRequest(node="any")),
        (control.DrainNode, control_pb2.DrainNodeRequest(node="any")),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call(request, metadata=metadata, timeout=10)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    node = node_pb2_grpc.NodeServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        node.RegisterNode(node_pb2.RegisterNodeRequest(name="from-a-container"), metadata=metadata, timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as info:
        list(node.GetBundle(node_pb2.GetBundleRequest(hash="0" * 64), metadata=metadata, timeout=10))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _open_session(channel: grpc.Channel, token: str | None, container_id: str) -> grpc.RpcError:
    stub = worker_pb2_grpc.WorkerServiceStub(channel)
    hello = worker_pb2.WorkerSessionRequest(hello=worker_pb2.WorkerHello(container_id=container_id))
    session = stub.WorkerSession(iter([hello]), metadata=_metadata(token), timeout=10)
    with pytest.raises(grpc.RpcError) as info:
        for message in session:
            raise AssertionError(f"the session opened and sent {message.WhichOneof('message')}")
    return info.value


@pytest.mark.timeout(120)
def test_container_token_cannot_open_another_containers_session(running: corral.App, channel: grpc.Channel) -> None:
    first = Lasting(tag="first").identity.remote()
    second = Lasting(tag="second").identity.remote()
    assert first["container_id"] != second["container_id"]
    assert first["container_token"] != second["container_token"]

    err = _open_session(channel, first["container_token"], second["container_id"])
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = _open_session(channel, second["container_token"], first["container_id"])
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = _open_session(channel, first["container_token"], "ct-does-not-exist")
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    # Its own id while its worker is connected: refused too (no stealing a live session's inputs).
    err = _open_session(channel, first["container_token"], first["container_id"])
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED

    # The intruding sessions did not disturb the real ones.
    assert Lasting(tag="first").identity.remote()["container_id"] == first["container_id"]
    assert Lasting(tag="second").identity.remote()["container_id"] == second["container_id"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("which", ["admin", "wrong", "missing"])
def test_worker_service_needs_a_container_token(running: corral.App, cluster: Cluster, channel: grpc.Channel, which: str) -> None:
    identity = AuthIdentity(tag="worker-auth").identity.remote()
    token = {"admin": cluster.token, "wrong": "wrong", "missing": None}[which]
    err = _open_session(channel, token, identity["container_id"])
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.timeout(120)
def test_container_token_dies_with_its_container(running: corral.App, cluster: Cluster, channel: grpc.Channel) -> None:
    identity = AuthIdentity(tag="short-lived").identity.remote()
    client = running.running.client  # type: ignore[union-attr]

    def gone() -> bool:
        listing = client.call(client.stub.ListContainers, control_pb2.ListContainersRequest())
        return identity["container_id"] not in {c.container_id for c in listing.containers}

    wait_for(gone, timeout=60, message="the idle container to scale down")
    err = _open_session(channel, identity["container_token"], identity["container_id"])
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
