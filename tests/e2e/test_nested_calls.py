"""Calls from inside a container (issue 14, item 6): a container calls, spawns, maps and streams
functions and classes of its own app, looks up other deployed apps, with a credential that can only
look up, bind, invoke, get results and cancel, and that dies with the container."""

from __future__ import annotations

from pathlib import Path

import pytest

import corral
import nested_app
from conftest import Cluster, read_events, wait_for
from corral_protocol.v1 import control_pb2
from e2e_helpers import client_for, deploy


@pytest.fixture(scope="module")
def running(cluster: Cluster):  # type: ignore[no-untyped-def]
    with nested_app.app.run(client=client_for(cluster)):
        yield


def test_a_function_calls_spawns_and_streams_its_apps_class_and_functions(running, events: Path) -> None:  # type: ignore[no-untyped-def]
    out = nested_app.orchestrate.remote(str(events))
    assert out["caller"] != out["recorder"]
    assert out["items"] == [3, 2, 1]
    assert sorted(read_events(events)) == ["direct call", "spawned"]


def test_a_function_fans_out_with_map(running) -> None:  # type: ignore[no-untyped-def]
    assert nested_app.fan_out.remote(6) == [0, 1, 4, 9, 16, 25]


def test_a_container_looks_up_another_deployed_app(running, cluster: Cluster) -> None:  # type: ignore[no-untyped-def]
    deploy(cluster, "functions_app.py", "nested-target")
    assert nested_app.call_other_app.remote("nested-target") == 49


def test_the_container_credential_is_scoped_and_dies_with_the_container(running, cluster: Cluster) -> None:  # type: ignore[no-untyped-def]
    refused = nested_app.try_forbidden.remote()
    assert "may only look up, bind, invoke" in refused, refused
    token = nested_app.my_token.remote()
    inside = corral.Client(cluster.url, token)
    inside.call(inside.stub.LookupClass, control_pb2.LookupClassRequest(app_name="nested-target", class_name="square"))
    assert nested_app.app.running is not None
    client = client_for(cluster)  # the last test of the module: the fixture's own stop then finds it stopped
    client.call(client.stub.StopApp, control_pb2.StopAppRequest(app=nested_app.app.running.app_id), timeout=120)
    # The app stopped, and its containers with it: their token opens nothing.
    stale = corral.Client(cluster.url, token)

    def refused() -> bool:
        try:
            stale.call(stale.stub.LookupClass, control_pb2.LookupClassRequest(app_name="nested-target", class_name="square"))
        except corral.exception.AuthError:
            return True
        return False

    wait_for(refused, message="the stopped container's token to be refused")
