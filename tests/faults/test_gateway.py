"""The web gateway under slow, endless and malformed clients: every one is answered or cut off
within a bound, and the container behind it is never harmed. Bounded counts, loopback only."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from faults_helpers import client_for

import corral
import faults_app
from conftest import Cluster, start_cluster
from corral_protocol.web import MAX_JSON_DEPTH
from corral_scheduler.gateway import BODY_IDLE_TIMEOUT_S, HEADER_TIMEOUT_S, KEEP_ALIVE_TIMEOUT_S

BOUND_S = 30.0  # every probe is answered or closed well within this


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, corral.Client, tuple[str, int]]]:
    cluster = start_cluster(tmp_path_factory.mktemp("gateway") / "home")
    client = client_for(cluster)
    try:
        with faults_app.app.run(client=client):
            url = urlsplit(cluster.http_url)
            assert url.hostname is not None and url.port is not None
            yield cluster, client, (url.hostname, url.port)
    finally:
        client.close()
        cluster.stop()


def _pid(cluster: Cluster) -> str:
    with httpx.Client(base_url=cluster.http_url, timeout=60) as http:
        response = http.get("/faults-dev/Web-ping")
        assert response.status_code == 200, response.text
        return str(response.json()["pid"])  # the container's id (every container is pid 1 inside)


def _read_until_closed(sock: socket.socket, within_s: float) -> tuple[bytes, bool]:
    """What the gateway sent, and whether it closed the connection within the bound."""
    deadline = time.monotonic() + within_s
    received = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received, True
        except TimeoutError:
            break
        if not chunk:
            return received, True
        received += chunk
    return received, False


def test_a_body_shorter_than_its_content_length_is_answered_408_and_closed(gateway) -> None:  # type: ignore[no-untyped-def]
    cluster, _, address = gateway
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(
            b"POST /faults-dev/Web-takes_dict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 10000000\r\n\r\n0123456789"
        )
        received, closed = _read_until_closed(sock, BODY_IDLE_TIMEOUT_S + BOUND_S)
    assert closed
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert b"stalled" in received
    _pid(cluster)


def test_dribbled_headers_are_cut_off(gateway) -> None:  # type: ignore[no-untyped-def]
    _, _, address = gateway
    request = b"GET /faults-dev/Web-ping HTTP/1.1\r\nhost: x\r\n" + b"x-padding: " + b"a" * 200
    cut_off = False
    with socket.create_connection(address, timeout=5) as sock:
        deadline = time.monotonic() + HEADER_TIMEOUT_S + BOUND_S
        for byte in request:
            if time.monotonic() > deadline:
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                cut_off = True
                break
            sock.settimeout(0.5)  # one byte every 0.5 s, while watching for the close
            try:
                if sock.recv(1) == b"":
                    cut_off = True
                    break
            except TimeoutError:
                continue
            except ConnectionResetError:
                cut_off = True
                break
    assert cut_off, "the gateway kept a connection whose headers never ended"


def test_many_partial_requests_are_closed_while_others_are_served(gateway) -> None:  # type: ignore[no-untyped-def]
    cluster, _, address = gateway
    pid = _pid(cluster)
    partial: list[socket.socket] = []
    try:
        for _ in range(200):
            sock = socket.create_connection(address, timeout=5)
            sock.sendall(b"GET /faults-dev/Web-ping HTTP/1.1\r\nhost: x\r\n")  # headers never end
            partial.append(sock)
        assert _pid(cluster) == pid
        deadline = time.monotonic() + HEADER_TIMEOUT_S + BOUND_S
        assert all(_read_until_closed(sock, max(0.1, deadline - time.monotonic()))[1] for sock in partial)
    finally:
        for sock in partial:
            sock.close()
    assert _pid(cluster) == pid


def test_an_idle_keep_alive_connection_is_closed(gateway) -> None:  # type: ignore[no-untyped-def]
    _, _, address = gateway
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(b"GET /faults-dev/Web-ping HTTP/1.1\r\nhost: x\r\n\r\n")
        received, closed = _read_until_closed(sock, KEEP_ALIVE_TIMEOUT_S + BOUND_S)
    assert received.startswith(b"HTTP/1.1 200") and closed


def test_deeply_nested_json_is_a_400_at_the_gateway(gateway) -> None:  # type: ignore[no-untyped-def]
    cluster, _, _ = gateway
    pid = _pid(cluster)
    body = b"[" * 100_000 + b"]" * 100_000  # 200 KB
    with httpx.Client(base_url=cluster.http_url, timeout=BOUND_S) as http:
        response = http.post("/faults-dev/Web-takes_dict", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400
        assert str(MAX_JSON_DEPTH) in response.json()["error"]
        # At the limit it is the container's to answer (here: not an object, so also a 400, from the container).
        shallow = json.dumps({"a": json.loads("[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1))})
        assert http.post("/faults-dev/Web-takes_dict", content=shallow, headers={"content-type": "application/json"}).json() == {"keys": ["a"]}
    assert _pid(cluster) == pid


@pytest.mark.parametrize(("body", "kind"), [("[1, 2]", "an array"), ('"text"', "a string"), ("3", "a number")])
def test_a_body_that_is_not_an_object_for_a_dict_argument_is_a_400(gateway, body: str, kind: str) -> None:  # type: ignore[no-untyped-def]
    cluster, _, _ = gateway
    with httpx.Client(base_url=cluster.http_url, timeout=BOUND_S) as http:
        response = http.post("/faults-dev/Web-takes_dict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == f"argument 'data' must be a JSON object, got {kind}"


def test_concurrent_slow_clients_do_not_delay_well_behaved_ones_past_the_bound(gateway) -> None:  # type: ignore[no-untyped-def]
    """Slow-body clients (each holding a request open) alongside normal requests: the normal ones are
    all answered, and the slow ones all get their 408."""
    cluster, _, address = gateway
    results: list[bytes] = []

    def slow() -> None:
        with socket.create_connection(address, timeout=5) as sock:
            sock.sendall(b"POST /faults-dev/Web-takes_dict HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
            results.append(_read_until_closed(sock, BODY_IDLE_TIMEOUT_S + BOUND_S)[0])

    threads = [threading.Thread(target=slow) for _ in range(20)]
    for thread in threads:
        thread.start()
    with httpx.Client(base_url=cluster.http_url, timeout=BOUND_S) as http:
        assert all(http.get("/faults-dev/Web-ping").status_code == 200 for _ in range(20))
    for thread in threads:
        thread.join(BODY_IDLE_TIMEOUT_S + BOUND_S + 5)
    assert len(results) == 20 and all(r.startswith(b"HTTP/1.1 408") for r in results)
