"""The container's direct port under junk, stalls and floods from clients without a token.

Each probe is bounded in count and time, sends only to loopback, and asserts that the container
survives (same pid, one container ever) and that `.remote()` keeps answering."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faults_helpers import client_for, containers

import corral
from conftest import APPS, Cluster, start_cluster
from corral.cls import Obj
from corral_protocol import PROTOCOL_VERSION, env
from corral_protocol.framing import HELLO_TIMEOUT_S, IDLE_TIMEOUT_S, encode, idle_timeout_s, read_frame
from corral_protocol.v1 import control_pb2, worker_pb2
from corral_runtime.direct import MAX_CONNECTIONS
from e2e.e2e_helpers import pids_with

W = worker_pb2
FLOOD = 300  # idle connections: far above the container's 32 waiting for a hello


SHORT_IDLE_S = 5.0


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, corral.Client]]:
    """The app deployed (so that fresh clients, with no pooled connection, can look it up)."""
    cluster = start_cluster(tmp_path_factory.mktemp("direct") / "home")
    client = client_for(cluster)
    try:
        deployed = cluster.corral("deploy", str(APPS / "faults_app.py"), "--name", "faults")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        yield cluster, client
    finally:
        client.close()
        cluster.stop()


def _payloads(client: corral.Client) -> Obj:
    return corral.Cls.from_name("faults", "Payloads", client=client)()


def _direct_address(client: corral.Client) -> tuple[str, int, str]:
    """The container's direct host, port and token (an admin may ask for routes)."""
    [container] = containers(client, "faults", "Payloads")
    routes = client.call(client.stub.GetRoutes, control_pb2.GetRoutesRequest(service_id=container.service_id)).routes
    host, _, port = routes[0].address.rpartition(":")
    return host, int(port), routes[0].token


def _rss_kib(container_id: str) -> int:
    """The resident memory of the container's worker process, seen from the host."""
    for pid in pids_with(container_id):
        if b"corral_runtime.worker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            continue
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no worker process of {container_id}")


def _closed_by_peer(sock: socket.socket, within_s: float) -> bool:
    """True when the container closes (or resets) the connection within the bound."""
    sock.settimeout(within_s)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_many_idle_connections_do_not_stop_remote_calls(running) -> None:  # type: ignore[no-untyped-def]
    cluster, client = running
    payloads = _payloads(client)
    pid = payloads.pid.remote()
    address = _direct_address(client)[:2]
    idle: list[socket.socket] = []
    try:
        for _ in range(FLOOD):
            sock = socket.socket()
            sock.settimeout(5)
            try:
                sock.connect(address)
            except OSError:  # the listen backlog is full: the flood is refused at the door
                sock.close()
                continue
            idle.append(sock)
        assert [payloads.pid.remote() for _ in range(20)] == [pid] * 20
        fresh = corral.Client(cluster.url, cluster.token)  # no pooled connection: opens a new one
        try:
            assert _payloads(fresh).pid.remote() == pid
        finally:
            fresh.close()
        # Every connection that never sent a hello is closed by the container within a bound.
        deadline = time.monotonic() + HELLO_TIMEOUT_S + 10
        assert all(_closed_by_peer(sock, max(0.1, deadline - time.monotonic())) for sock in idle)
    finally:
        for sock in idle:
            sock.close()
    assert payloads.pid.remote() == pid
    assert len(containers(client, "faults", "Payloads", live_only=False)) == 1


def test_a_caller_refused_at_the_connection_bound_falls_back_to_the_queue(running) -> None:  # type: ignore[no-untyped-def]
    """Authenticated idle connections fill the container's bound; a new caller's connection is closed
    before its input is sent, and the call goes through the control plane instead of failing."""
    cluster, client = running
    payloads = _payloads(client)
    pid = payloads.pid.remote()
    host, port, token = _direct_address(client)
    hello = W.DirectRequest(hello=W.DirectHello(token=token, protocol_version=PROTOCOL_VERSION, want_accepted=True))
    held: list[socket.socket] = []
    try:
        for _ in range(MAX_CONNECTIONS + 8):
            sock = socket.create_connection((host, port), timeout=10)
            held.append(sock)
            sock.sendall(encode(hello.SerializeToString()))
            try:
                frame = read_frame(sock)
            except OSError:
                frame = None
            if frame is None or W.DirectResponse.FromString(frame).WhichOneof("message") != "accepted":
                break  # at the bound
        else:
            raise AssertionError(f"the container accepted more than {MAX_CONNECTIONS} connections")
        fresh = corral.Client(cluster.url, cluster.token)
        try:
            assert [_payloads(fresh).pid.remote() for _ in range(3)] == [pid] * 3
        finally:
            fresh.close()
    finally:
        for sock in held:
            sock.close()
    assert "direct port at its bound" in cluster.logs()
    assert payloads.pid.remote() == pid
    assert len(containers(client, "faults", "Payloads", live_only=False)) == 1


def test_an_unauthenticated_huge_frame_is_closed_without_allocating(running) -> None:  # type: ignore[no-untyped-def]
    _, client = running
    payloads = _payloads(client)
    pid = payloads.pid.remote()
    before = _rss_kib(pid)
    socks = []
    try:
        for _ in range(4):
            sock = socket.create_connection(_direct_address(client)[:2], timeout=5)
            sock.sendall(struct.pack("<I", 200 * 1024 * 1024) + b"x" * 1024)
            socks.append(sock)
        assert all(_closed_by_peer(sock, 10) for sock in socks)
    finally:
        for sock in socks:
            sock.close()
    assert _rss_kib(pid) - before < 50 * 1024  # 4 x 200 MB declared: nothing of it allocated
    assert payloads.pid.remote() == pid


@pytest.mark.parametrize("junk", [b"", b"\x05\x00", b"\x10\x00\x00\x00garbage-garbage!", b"GET / HTTP/1.1\r\n\r\n"])
def test_stalled_dribbled_or_junk_hellos_are_closed_within_a_bound(running, junk: bytes) -> None:  # type: ignore[no-untyped-def]
    _, client = running
    payloads = _payloads(client)
    pid = payloads.pid.remote()
    with socket.create_connection(_direct_address(client)[:2], timeout=5) as sock:
        for byte in junk[:3]:  # dribbled
            sock.sendall(bytes([byte]))
            time.sleep(0.3)
        sock.sendall(junk[3:])
        assert _closed_by_peer(sock, HELLO_TIMEOUT_S + 10)
    assert payloads.pid.remote() == pid
    assert len(containers(client, "faults", "Payloads", live_only=False)) == 1


def test_an_idle_authenticated_connection_is_closed(tmp_path: Path) -> None:
    """Waits out the idle timeout (CORRAL_DIRECT_IDLE_TIMEOUT_S, 5 s on this node; 60 s by default):
    the container frees connections that callers abandoned, and keeps serving."""
    cluster = start_cluster(tmp_path / "home", extra_env={env.CORRAL_DIRECT_IDLE_TIMEOUT_S: str(SHORT_IDLE_S)})
    client = client_for(cluster)
    try:
        deployed = cluster.corral("deploy", str(APPS / "faults_app.py"), "--name", "faults")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        payloads = _payloads(client)
        pid = payloads.pid.remote()
        host, port, token = _direct_address(client)
        hello = W.DirectRequest(hello=W.DirectHello(token=token, protocol_version=PROTOCOL_VERSION, want_accepted=True))
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(encode(hello.SerializeToString()))
            frame = read_frame(sock)
            assert frame is not None and W.DirectResponse.FromString(frame).WhichOneof("message") == "accepted"
            assert _closed_by_peer(sock, SHORT_IDLE_S + 20)
        assert payloads.pid.remote() == pid
    finally:
        client.close()
        cluster.stop()


def test_a_bad_idle_timeout_setting_is_refused_naming_it() -> None:
    assert idle_timeout_s({}) == IDLE_TIMEOUT_S == 60.0
    assert idle_timeout_s({env.CORRAL_DIRECT_IDLE_TIMEOUT_S: "7.5"}) == 7.5
    for bad in ("", "soon", "nan", "inf", "-1", "1"):
        with pytest.raises(ValueError, match=env.CORRAL_DIRECT_IDLE_TIMEOUT_S):
            idle_timeout_s({env.CORRAL_DIRECT_IDLE_TIMEOUT_S: bad})


def _kill_container(container_id: str) -> None:
    """`kill -9` of every host process of the container, and wait until they are gone."""
    pids = pids_with(container_id)
    assert pids, f"no process of {container_id}"
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids), f"{container_id} outlived kill -9"


def test_a_pooled_connection_to_a_killed_container_falls_back_to_the_queue(running) -> None:  # type: ignore[no-untyped-def]
    """Sync callers: the pooled connections of a killed container never fail a call; the next call
    goes through the control plane's queue and gets a new container."""
    cluster, client = running
    pooled = corral.Cls.from_name("faults", "Pooled", client=client)()
    first = pooled.pid.remote()
    assert [pooled.pid.remote() for _ in range(3)] == [first] * 3  # pooled connections are warm
    _kill_container(first)
    second = pooled.pid.remote()  # never raises
    assert second != first
    assert pooled.pid.remote() == second


def test_a_pooled_asyncio_connection_to_a_killed_container_falls_back_to_the_queue(running) -> None:  # type: ignore[no-untyped-def]
    """As above for `.aio` callers, whose pooled connections are asyncio transports."""
    _, client = running
    pooled = corral.Cls.from_name("faults", "Pooled", client=client)()

    async def scenario() -> tuple[str, str, str]:
        first = await pooled.pid_aio.remote.aio()
        for _ in range(3):
            assert await pooled.pid_aio.remote.aio() == first
        _kill_container(first)  # blocking the loop: it has not seen the connections close
        second = await pooled.pid_aio.remote.aio()  # never raises
        return first, second, await pooled.pid_aio.remote.aio()

    first, second, third = asyncio.run(scenario())
    assert second != first and third == second
