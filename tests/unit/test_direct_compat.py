"""The SDK's direct path against a container runtime older than DirectAccepted: the runtime ignores
`want_accepted` and waits for the input after the hello. Calls must still be answered, on new and
pooled connections, from sync and asyncio callers. The old runtime is a real TCP server here."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest

from corral import _serialization
from corral._direct import DirectPath
from corral_protocol.framing import encode, read_frame
from corral_protocol.v1 import common_pb2, control_pb2, worker_pb2

W = worker_pb2
TOKEN = "old-token"


def _serve_old_protocol(conn: socket.socket) -> None:
    with conn:
        hello = read_frame(conn)
        if hello is None or W.DirectRequest.FromString(hello).hello.token != TOKEN:
            return
        while (frame := read_frame(conn)) is not None:
            inp = W.DirectRequest.FromString(frame).input
            args, _ = _serialization.decode_args(inp.args)
            result = _serialization.success(args[0] * 2)
            conn.sendall(encode(W.DirectResponse(output=W.Output(input_id=inp.input_id, result=result)).SerializeToString()))


@pytest.fixture
def old_runtime() -> Iterator[str]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_serve_old_protocol, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    host, port = listener.getsockname()[:2]
    try:
        yield f"{host}:{port}"
    finally:
        listener.close()


def _path(address: str) -> DirectPath:
    response = control_pb2.GetRoutesResponse(
        direct_enabled=True, routes=[control_pb2.ContainerRoute(container_id="ct-old", address=address, token=TOKEN, slots=4)],
    )

    async def get_routes_aio(service_id: str) -> control_pb2.GetRoutesResponse:
        return response

    return DirectPath(lambda service_id: response, get_routes_aio)


def _value(result: common_pb2.Result | None) -> object:
    assert result is not None, "the direct path gave the input up"
    return _serialization.unwrap(result)


def test_sync_calls_to_an_older_runtime_are_answered(old_runtime: str) -> None:
    path = _path(old_runtime)
    assert [_value(path.call("sv", "double", _serialization.encode_args((n,), {}))) for n in range(5)] == [0, 2, 4, 6, 8]


def test_asyncio_calls_to_an_older_runtime_are_answered(old_runtime: str) -> None:
    path = _path(old_runtime)

    async def calls() -> list[object]:
        results = await asyncio.gather(*[path.call_aio("sv", "double", _serialization.encode_args((n,), {})) for n in range(4)])
        return [_value(r) for r in results] + [_value(await path.call_aio("sv", "double", _serialization.encode_args((9,), {})))]

    assert asyncio.run(calls()) == [0, 2, 4, 6, 18]
