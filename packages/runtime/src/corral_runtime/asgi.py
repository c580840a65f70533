"""ASGI apps in the container: built once from `@corral.asgi_app()` methods, then one HTTP input
at a time runs through them, with the response streamed back as it is produced."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from corral._definition import ClassDefinition
from corral_protocol.v1 import worker_pb2

StartResponse = Callable[[int, list[tuple[bytes, bytes]]], Awaitable[None]]
SendBody = Callable[[bytes, bool], Awaitable[None]]


async def build_asgi_apps(definition: ClassDefinition, instance: Any) -> dict[str, Any]:
    """Call each ASGI factory method once (after the @enter hooks); the apps by method name."""
    apps: dict[str, Any] = {}
    for info in definition.methods.values():
        if not info.is_asgi_app:
            continue
        app = getattr(instance, info.name)()
        if inspect.isawaitable(app):
            app = await app
        if not callable(app):
            raise TypeError(f"@corral.asgi_app() method {definition.name}.{info.name} returned {app!r}, not an ASGI app")
        apps[info.name] = app
    return apps


def http_scope(request: worker_pb2.HttpRequest) -> dict[str, Any]:
    path = request.path or "/"
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": request.root_path,
        "query_string": request.query_string,
        "headers": [(h.name.lower().encode("latin-1"), h.value) for h in request.headers],
        "client": (request.client_host, 0) if request.client_host else None,
        "server": None,
        "state": {},
    }


async def run_asgi(app: Any, request: worker_pb2.HttpRequest, start: StartResponse, body: SendBody) -> None:
    """Run one request through `app`. Raises what the app raised if it did so before starting its
    response; after the start, a failure only ends the body early."""
    request_sent = False
    done = asyncio.Event()
    started = finished = False

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await done.wait()  # the whole body was given at once; the "client" leaves when the response ends
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal started, finished
        if message["type"] == "http.response.start":
            started = True
            await start(int(message["status"]), [(bytes(k), bytes(v)) for k, v in message.get("headers", ())])
        elif message["type"] == "http.response.body" and started and not finished:
            more = bool(message.get("more_body", False))
            finished = not more
            await body(bytes(message.get("body", b"")), more)
            if finished:
                done.set()

    try:
        await app(http_scope(request), receive, send)
    except Exception:
        if not started:
            raise
    finally:
        done.set()
    if not started:
        raise RuntimeError("the ASGI app returned without sending a response")
    if not finished:
        await body(b"", False)
