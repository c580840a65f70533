"""One payload policy on every path: payloads above gRPC's default 4 MiB pass through the control
plane, and one over the limit (CORRAL_MAX_PAYLOAD_BYTES, here 8 MiB on the cluster) is refused
with InvalidError naming both sizes, on every path, while the container lives on."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from faults_helpers import client_for, containers

import corral
import faults_app
from conftest import Cluster, start_cluster
from corral.exception import InvalidError
from corral_protocol import env

MiB = 1024 * 1024
LIMIT = 8 * MiB


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, corral.Client]]:
    cluster = start_cluster(tmp_path_factory.mktemp("payloads") / "home", extra_env={env.CORRAL_MAX_PAYLOAD_BYTES: str(LIMIT)})
    client = client_for(cluster)
    try:
        with faults_app.app.run(client=client):
            yield cluster, client
    finally:
        client.close()
        cluster.stop()


def test_five_mib_through_spawn_map_and_remote_reaches_one_living_container(limited, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(env.CORRAL_MAX_PAYLOAD_BYTES, str(LIMIT))
    _, client = limited
    payloads = faults_app.Payloads()
    data = b"y" * (5 * MiB)
    pid, size = payloads.size.spawn(data).get(timeout=120)
    assert size == len(data)
    assert [s for _, s in payloads.size.map([data, data])] == [len(data)] * 2
    assert payloads.size.remote(data) == (pid, len(data))
    assert len(payloads.make.spawn(5 * MiB).get(timeout=120)) == 5 * MiB
    assert len(payloads.make.remote(5 * MiB)) == 5 * MiB
    assert payloads.pid.remote() == pid
    assert len(containers(client, "faults", "Payloads", live_only=False)) == 1


def test_five_mib_to_a_class_with_retries_goes_through_the_control_plane_and_the_container_lives(limited, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Issue 15: with retries, every call of a class went through the control plane, and a >= 4 MiB
    input killed each container the retries started."""
    monkeypatch.setenv(env.CORRAL_MAX_PAYLOAD_BYTES, str(LIMIT))
    _, client = limited
    retried = faults_app.RetriedPayloads()
    data = b"r" * (5 * MiB)
    pids = {retried.size.remote(data)[0] for _ in range(3)}
    assert len(pids) == 1
    assert len(containers(client, "faults", "RetriedPayloads", live_only=False)) == 1


@pytest.mark.parametrize("path", ["remote", "spawn"])
def test_arguments_over_the_limit_are_refused_by_the_sdk_before_sending(limited, monkeypatch: pytest.MonkeyPatch, path: str) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(env.CORRAL_MAX_PAYLOAD_BYTES, str(LIMIT))
    _, client = limited
    payloads = faults_app.Payloads()
    pid = payloads.pid.remote()
    with pytest.raises(InvalidError) as raised:
        getattr(payloads.size, path)(b"z" * (LIMIT + 1))
    message = str(raised.value)
    assert "Payloads.size" in message and str(LIMIT) in message and "8 MiB" in message
    assert payloads.pid.remote() == pid
    assert len(containers(client, "faults", "Payloads", live_only=False)) == 1


@pytest.mark.parametrize("path", ["remote", "spawn"])
def test_the_control_plane_refuses_arguments_over_its_limit_from_a_client_with_a_larger_one(limited, monkeypatch: pytest.MonkeyPatch, path: str) -> None:  # type: ignore[no-untyped-def]
    """A client configured with a larger limit (here the 2 GiB default) is refused by the server.
    Above 2 MiB both paths send a blob: the control plane refuses its upload (PutBlob) from the
    size declared in the first chunk, before storing anything."""
    monkeypatch.delenv(env.CORRAL_MAX_PAYLOAD_BYTES, raising=False)
    _, client = limited
    payloads = faults_app.Payloads()
    pid = payloads.pid.remote()
    with pytest.raises(InvalidError) as raised:
        call = getattr(payloads.size, path)(b"z" * (LIMIT + MiB))
        if path == "spawn":
            call.get(timeout=120)
    assert str(LIMIT) in str(raised.value)
    assert payloads.pid.remote() == pid
    assert len(containers(client, "faults", "Payloads", live_only=False)) == 1


@pytest.mark.parametrize("path", ["remote", "spawn"])
def test_a_result_over_the_limit_is_an_invalid_error_and_the_container_lives(limited, monkeypatch: pytest.MonkeyPatch, path: str) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(env.CORRAL_MAX_PAYLOAD_BYTES, str(LIMIT))
    _, client = limited
    payloads = faults_app.Payloads()
    pid = payloads.pid.remote()
    with pytest.raises(InvalidError) as raised:
        if path == "spawn":
            payloads.make.spawn(LIMIT + 1).get(timeout=120)
        else:
            payloads.make.remote(LIMIT + 1)
    assert "return value of make" in str(raised.value) and str(LIMIT) in str(raised.value)
    assert payloads.pid.remote() == pid
    assert len(containers(client, "faults", "Payloads", live_only=False)) == 1


def test_the_gateway_refuses_a_body_over_the_payload_limit_with_413(limited) -> None:  # type: ignore[no-untyped-def]
    cluster, _ = limited
    with httpx.Client(base_url=cluster.http_url, timeout=60) as http:
        response = http.post("/faults-dev/Web-takes_dict", content=b"{" + b" " * LIMIT + b"}", headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert str(LIMIT) in response.json()["error"]
        assert http.post("/faults-dev/Web-takes_dict", json={"b": 1, "a": 2}).json() == {"keys": ["a", "b"]}
