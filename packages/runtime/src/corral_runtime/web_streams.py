"""Streamed web responses of function endpoints: a returned `StreamingResponse` (any ASGI
response object) runs as a one-request ASGI app, and a generator (sync or async, returned or the
endpoint itself) streams each item as a body chunk as it is produced. This is how LLM token
streams are served. The HTTP client going away cancels the input, which closes the generator.

Items: bytes as they are, str as UTF-8, anything else as one JSON document per line.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from corral_runtime.runner import InputRunner

Start = Callable[[int, list[tuple[bytes, bytes]]], Awaitable[None]]
Body = Callable[[bytes, bool], Awaitable[None]]

_STREAM_HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-cache")]


def is_asgi_response(value: Any) -> bool:
    """A Starlette/FastAPI `Response` (duck-typed: the worker does not need Starlette itself)."""
    return callable(value) and hasattr(value, "status_code") and hasattr(value, "raw_headers") and not isinstance(value, type)


def is_generator(value: Any) -> bool:
    return inspect.isgenerator(value) or inspect.isasyncgen(value)


def chunk(item: Any, to_json: Callable[[Any], bytes]) -> bytes:
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, str):
        return item.encode()
    return to_json(item) + b"\n"


async def stream_generator(gen: Any, runner: InputRunner, start: Start, body: Body, to_json: Callable[[Any], bytes]) -> None:
    """Serve a generator's items as the body; an error after the start ends the body early (the
    status line has gone), and is reported on the worker's stderr by the caller."""
    await start(200, _STREAM_HEADERS)
    try:
        while True:
            more, item = await runner.next_item(gen)
            if not more:
                break
            await body(chunk(item, to_json), True)
    finally:
        await runner.close_generator(gen)
        await body(b"", False)
