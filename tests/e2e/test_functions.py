"""`@app.function()` end to end: a function is a class with one method underneath, but users and
the CLI see a function (issue 14, item 2)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

import corral
import functions_app
from conftest import Cluster, read_events
from corral_protocol.v1 import control_pb2
from e2e_helpers import client_for, deploy


@pytest.fixture(scope="module")
def running(cluster: Cluster):  # type: ignore[no-untyped-def]
    with functions_app.app.run(client=client_for(cluster)):
        yield functions_app.app.running


def test_remote_aio_spawn_and_local(running) -> None:  # type: ignore[no-untyped-def]
    assert functions_app.square.remote(7) == 49
    assert asyncio.run(functions_app.add.remote.aio(2, b=5)) == 7
    assert functions_app.add.remote(2) == 3
    assert functions_app.square.spawn(9).get(timeout=60) == 81
    assert functions_app.square.local(4) == 16
    assert functions_app.add.local(1, 1) == 2
    assert functions_app.pid.remote() != functions_app.pid.local()


def test_map_starmap_and_for_each(running, events: Path) -> None:  # type: ignore[no-untyped-def]
    assert list(functions_app.square.map(range(10))) == [x * x for x in range(10)]
    assert list(functions_app.add.starmap([(1, 2), (3, 4)])) == [3, 7]
    assert functions_app.record.for_each([str(events)] * 3, ["a", "b", "c"]) is None
    assert sorted(read_events(events)) == ["a", "b", "c"]


def test_concurrent_batched_and_errors(running) -> None:  # type: ignore[no-untyped-def]
    assert sorted(functions_app.slow_echo.map(["a", "b", "c", "d"])) == ["a", "b", "c", "d"]
    assert list(functions_app.double_all.map(range(5))) == [0, 2, 4, 6, 8]
    with pytest.raises(ValueError, match="from a function"):
        functions_app.fails.remote()


def test_a_web_endpoint_on_a_function(running) -> None:  # type: ignore[no-untyped-def]
    url = running.web_urls["hello.hello"]
    assert httpx.get(url, params={"name": "corral"}, timeout=60).json() == {"hello": "corral"}


def test_from_name_with_options_and_the_cli_shows_functions(cluster: Cluster) -> None:
    deploy(cluster, "functions_app.py", "e2e-functions")
    client = client_for(cluster)
    square = corral.Function.from_name("e2e-functions", "square", client=client)
    assert square.remote(12) == 144
    assert square.with_options(timeout=30, max_containers=1).remote(3) == 9
    with pytest.raises(corral.exception.InvalidError, match="looked up by name"):
        square.local(1)
    (info,) = [a for a in client.call(client.stub.ListApps, control_pb2.ListAppsRequest()).apps if a.name == "e2e-functions"]
    assert "square" in info.functions and "hello" in info.functions and not info.classes
    shown = cluster.corral("app", "list")
    assert shown.returncode == 0, shown.stderr
    (row,) = [line for line in shown.stdout.splitlines() if "e2e-functions" in line]
    assert "square" in row and "FUNCTIONS" in shown.stdout
