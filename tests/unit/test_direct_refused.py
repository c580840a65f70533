"""A route whose container's port refuses connections (its process is gone): the direct path gives
the input up (the control plane takes it), but first asks the control plane why the container
ended, which waits until the plane knows it is gone, so that the plane does not push the input to
that container's ending session. A real closed port stands in for the dead container."""

from __future__ import annotations

import asyncio
import socket

from corral import _serialization
from corral._direct import DirectPath
from corral_protocol.v1 import control_pb2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once it is closed


def _path(asked: list[tuple[str, str, str]]) -> DirectPath:
    routes = control_pb2.GetRoutesResponse(routes=[control_pb2.ContainerRoute(
        container_id="ct-dead", address=f"127.0.0.1:{_closed_port()}", token="t", slots=1)], direct_enabled=True)

    async def routes_aio(service_id: str) -> control_pb2.GetRoutesResponse:
        return routes

    def exit_of(service_id: str, container_id: str, method: str) -> str:
        asked.append((service_id, container_id, method))
        return "the container running Model.f exited unexpectedly (exit code -9): it was killed by signal 9"

    async def exit_of_aio(service_id: str, container_id: str, method: str) -> str:
        return exit_of(service_id, container_id, method)

    return DirectPath(lambda service_id: routes, routes_aio, exit_of, exit_of_aio)


def test_a_refused_route_waits_for_the_plane_to_know_then_gives_the_input_up() -> None:
    asked: list[tuple[str, str, str]] = []
    path = _path(asked)
    assert path.call("svc", "f", _serialization.encode_args((1,), {})) is None  # the control plane takes it
    assert asked == [("svc", "ct-dead", "f")]


def test_the_same_for_asyncio_callers() -> None:
    asked: list[tuple[str, str, str]] = []
    path = _path(asked)
    assert asyncio.run(path.call_aio("svc", "f", _serialization.encode_args((1,), {}))) is None
    assert asked == [("svc", "ct-dead", "f")]
