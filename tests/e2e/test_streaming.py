"""Generators end to end (issue 14, item 3): `.remote_gen` and `.remote_gen.aio` stream items as
they are produced; leaving the loop stops the generator and the container takes its next input."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import corral
import streaming_app
from conftest import Cluster, read_events, wait_for
from e2e_helpers import client_for


@pytest.fixture(scope="module")
def running(cluster: Cluster):  # type: ignore[no-untyped-def]
    with streaming_app.app.run(client=client_for(cluster)):
        yield streaming_app.app.running


def test_sync_and_async_generators_stream_their_items(running) -> None:  # type: ignore[no-untyped-def]
    assert list(streaming_app.countdown.remote_gen(3)) == [3, 2, 1]
    assert list(streaming_app.Tokens().stream.remote_gen(3)) == ["tok0", "tok1", "tok2"]

    async def collect() -> list[str]:
        return [item async for item in streaming_app.Tokens(prefix="a").stream.remote_gen.aio(2)]

    assert asyncio.run(collect()) == ["a0", "a1"]
    assert list(streaming_app.countdown.remote_gen(0)) == []


def test_an_item_arrives_before_the_generator_finishes(running, shared_dir: Path) -> None:  # type: ignore[no-untyped-def]
    gate = shared_dir / "gate"  # in the container volume: the container sees it appear
    items = streaming_app.handshake.remote_gen(str(gate))
    assert next(items) == "first"  # the generator now waits for `gate`: it cannot have finished
    gate.touch()
    assert list(items) == ["second"]


def test_an_error_after_items_reaches_the_consumer(running) -> None:  # type: ignore[no-untyped-def]
    seen = []
    with pytest.raises(RuntimeError, match="generator broke"):
        for item in streaming_app.raises_after_one.remote_gen():
            seen.append(item)
    assert seen == [1]


def test_remote_on_a_non_generator_with_remote_gen_is_refused(running) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(corral.exception.InvalidError, match="not a generator"):
        list(streaming_app.Tokens().pid.remote_gen())


def test_leaving_the_loop_stops_the_generator_and_the_container_lives_on(running, events: Path) -> None:  # type: ignore[no-untyped-def]
    tokens = streaming_app.Tokens(prefix="cancel")
    pid = tokens.pid.remote()
    for item in tokens.endless.remote_gen(str(events)):
        if item == 3:
            break
    wait_for(lambda: "async closed" in read_events(events), message="the async generator to close")

    for item in streaming_app.endless.remote_gen(str(events)):
        if item == 3:
            break
    wait_for(lambda: "sync closed" in read_events(events), message="the sync generator to close")
    assert tokens.pid.remote() == pid


def test_async_consumer_cancellation_stops_the_generator(running, events: Path) -> None:  # type: ignore[no-untyped-def]
    async def consume() -> None:
        gen = streaming_app.Tokens(prefix="aio-cancel").endless.remote_gen.aio(str(events))
        async for item in gen:
            if item == 2:
                break
        await gen.aclose()

    asyncio.run(consume())
    wait_for(lambda: "async closed" in read_events(events), message="the async generator to close")


def test_a_sync_consumer_streams_on_the_direct_path_when_a_route_exists(running, cluster: Cluster, events: Path) -> None:  # type: ignore[no-untyped-def]
    from corral import _direct_stream, _serialization
    from corral_protocol.v1 import control_pb2

    client = client_for(cluster)
    tokens = streaming_app.Tokens(prefix="direct")
    tokens.pid.remote()
    resolved, service_id = tokens._bind()
    wait_for(
        lambda: len(client.call(client.stub.GetRoutes, control_pb2.GetRoutesRequest(service_id=service_id)).routes) == 1,
        message="a route to the READY container",
    )
    resolved.client.direct._table(service_id).fetched_at = float("-inf")  # fetched before the route existed
    payload = _serialization.encode_args((3,), {}, "stream")
    opened = _direct_stream.open_stream(resolved.client.direct, service_id, "stream", payload)
    assert opened is not None, "the direct path did not take the generator call"
    assert [_serialization.decode_value(p) for p in opened.items()] == ["direct0", "direct1", "direct2"]
    assert opened.result is not None and opened.result.status == 1

    endless = _direct_stream.open_stream(resolved.client.direct, service_id, "endless", _serialization.encode_args((str(events),), {}, "endless"))
    assert endless is not None
    for item in endless.items():
        if _serialization.decode_value(item) == 3:
            break
    wait_for(lambda: "async closed" in read_events(events), message="the direct generator to close")
    assert tokens.pid.remote() == tokens.pid.remote()


def _direct_route_ready(cluster: Cluster, obj: streaming_app.Tokens) -> None:
    """Start `obj`'s container and wait until the control plane routes to it directly."""
    from corral_protocol.v1 import control_pb2

    client = client_for(cluster)
    obj.pid.remote()
    resolved, service_id = obj._bind()
    wait_for(
        lambda: len(client.call(client.stub.GetRoutes, control_pb2.GetRoutesRequest(service_id=service_id)).routes) == 1,
        message="a route to the READY container",
    )
    resolved.client.direct._table(service_id).fetched_at = float("-inf")  # fetched before the route existed


def test_an_async_consumer_streams_on_the_direct_path_as_items_are_produced(running, cluster: Cluster, shared_dir: Path, events: Path) -> None:  # type: ignore[no-untyped-def]
    tokens = streaming_app.Tokens(prefix="aio-direct")
    _direct_route_ready(cluster, tokens)
    pid = tokens.pid.remote()
    gate = shared_dir / "gate"  # in the container volume: the container sees it appear

    async def consume() -> list[object]:
        seen: list[object] = []
        async for item in tokens.watched.remote_gen.aio(str(events), str(gate)):
            seen.append(item)
            if len(seen) == 1:
                gate.touch()  # the generator waits for it: the first item came before the generator went on
            if item == 2:
                break  # leaving the loop closes the connection: the container stops the generator
        return seen

    seen = asyncio.run(consume())
    assert str(seen[0]).startswith("di-"), f"not a direct input: {seen[0]!r}"
    assert seen[1:] == [0, 1, 2]
    wait_for(lambda: "watched closed" in read_events(events), message="the generator to close")
    assert tokens.pid.remote() == pid  # the same container takes its next input


def test_cancelling_an_async_consumer_on_the_direct_path_stops_the_generator(running, cluster: Cluster, events: Path) -> None:  # type: ignore[no-untyped-def]
    tokens = streaming_app.Tokens(prefix="aio-direct-cancel")
    _direct_route_ready(cluster, tokens)
    pid = tokens.pid.remote()

    async def consume(first: asyncio.Future[object]) -> None:
        async for item in tokens.watched.remote_gen.aio(str(events)):
            if not first.done():
                first.set_result(item)

    async def cancel_midway() -> object:
        first: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(consume(first))
        input_id = await asyncio.wait_for(first, 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return input_id

    input_id = asyncio.run(cancel_midway())
    assert str(input_id).startswith("di-"), f"not a direct input: {input_id!r}"
    wait_for(lambda: "watched closed" in read_events(events), message="the generator to close")
    assert tokens.pid.remote() == pid


def test_a_generator_endpoint_streams_to_the_http_client(running, shared_dir: Path) -> None:  # type: ignore[no-untyped-def]
    import httpx

    url = running.web_urls["tokens.tokens"]
    assert httpx.get(url, params={"n": 3}, timeout=60).text == "tok0 tok1 tok2 "
    gate = shared_dir / "gate"  # in the container volume: the container sees it appear
    with httpx.stream("GET", url, params={"n": 2, "gate": str(gate)}, timeout=60) as response:
        chunks = response.iter_text()
        assert next(chunks) == "tok0 "  # the endpoint now waits for `gate`: the first token came early
        gate.touch()
        assert "".join(chunks) == "tok1 "


def test_a_streaming_response_streams_to_the_http_client(running) -> None:  # type: ignore[no-untyped-def]
    import httpx

    response = httpx.get(running.web_urls["sse.sse"], params={"n": 3}, timeout=60)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"


def test_an_http_client_that_leaves_stops_the_generator(running, events: Path) -> None:  # type: ignore[no-untyped-def]
    import httpx

    with httpx.stream("GET", running.web_urls["endless_web.endless_web"], params={"events": str(events)}, timeout=60) as response:
        for line in response.iter_lines():
            if line == "3":
                break
    wait_for(lambda: "web closed" in read_events(events), message="the web generator to close")
