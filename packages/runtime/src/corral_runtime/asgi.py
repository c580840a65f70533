"""ASGI apps in the container: built once from `@corral.asgi_app()` methods, then one HTTP input
at a time runs through them, with the response streamed back as it is produced.

Each app gets the ASGI lifespan protocol as uvicorn's `lifespan="auto"` runs it: `lifespan.startup`
once the app is built (after the @enter hooks), waiting for `lifespan.startup.complete` (a
`lifespan.startup.failed` is an init failure), and `lifespan.shutdown` at a graceful stop, before the
@exit hooks. An app that raises on the lifespan scope does not support it, and is served without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from corral.container_api import ClassDefinition
from corral_protocol.v1 import worker_pb2

StartResponse = Callable[[int, list[tuple[bytes, bytes]]], Awaitable[None]]
SendBody = Callable[[bytes, bool], Awaitable[None]]
# After answering `lifespan.shutdown` an app normally returns at once; past this it is cancelled.
_RETURN_AFTER_SHUTDOWN_S = 5.0


class LifespanStartupFailed(Exception):
    """The app answered `lifespan.startup.failed`: the container's init fails with its message."""


class Lifespan:
    """The lifespan protocol with one app: a task running the app on the lifespan scope, fed events."""

    def __init__(self, app: Any, name: str) -> None:
        self.app = app
        self.name = name
        self.state: dict[str, Any] = {}  # the scope's "state", copied into every request's scope
        self.supported = False
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._answers: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self._events.get, self._send)
        except Exception as exc:
            self._error = exc
        finally:
            self._answers.put_nowait(None)  # the app returned

    async def _send(self, message: dict[str, Any]) -> None:
        await self._answers.put(dict(message))

    async def startup(self) -> None:
        """Send `lifespan.startup` and wait for the answer; raises LifespanStartupFailed on a failure."""
        self._task = asyncio.create_task(self._run(), name=f"corral-lifespan-{self.name}")
        await self._events.put({"type": "lifespan.startup"})
        answer = await self._answers.get()
        if answer is None:
            if self._error is not None:  # uvicorn's "auto": an app that raises here does not do lifespan
                print(f"corral worker: the ASGI app {self.name} does not support the lifespan protocol "
                      f"({type(self._error).__name__}: {self._error}); serving it without lifespan events", file=sys.stderr)
            return
        if answer.get("type") == "lifespan.startup.failed":
            raise LifespanStartupFailed(f"the ASGI app {self.name} failed its lifespan startup: {answer.get('message', '')}".rstrip(": "))
        if answer.get("type") != "lifespan.startup.complete":
            raise LifespanStartupFailed(f"the ASGI app {self.name} answered lifespan.startup with {answer.get('type')!r}")
        self.supported = True

    async def shutdown(self) -> None:
        """Send `lifespan.shutdown` to an app that completed its startup and wait for the answer;
        a failure is printed, not raised (the @exit hooks still run)."""
        task = self._task
        if task is None or task.done() or not self.supported:
            return
        await self._events.put({"type": "lifespan.shutdown"})
        answer = await self._answers.get()
        if answer is None and self._error is not None:
            print(f"corral worker: the ASGI app {self.name} raised in its lifespan shutdown:", file=sys.stderr)
            traceback.print_exception(type(self._error), self._error, self._error.__traceback__)
        elif answer is not None and answer.get("type") == "lifespan.shutdown.failed":
            print(f"corral worker: the ASGI app {self.name} failed its lifespan shutdown: {answer.get('message', '')}", file=sys.stderr)
        done, _ = await asyncio.wait({task}, timeout=_RETURN_AFTER_SHUTDOWN_S)
        if not done:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


class AsgiApp:
    """An app built by an `@corral.asgi_app()` method, with its lifespan."""

    def __init__(self, app: Any, name: str) -> None:
        self.app = app
        self.lifespan = Lifespan(app, name)


async def build_asgi_apps(definition: ClassDefinition, instance: Any) -> dict[str, AsgiApp]:
    """Call each ASGI factory method once (after the @enter hooks) and run its lifespan startup;
    the apps by method name. If one fails, the ones already started are shut down."""
    apps: dict[str, AsgiApp] = {}
    try:
        for info in definition.methods.values():
            if not info.is_asgi_app:
                continue
            app = getattr(instance, info.name)()
            if inspect.isawaitable(app):
                app = await app
            if not callable(app):
                raise TypeError(f"@corral.asgi_app() method {definition.name}.{info.name} returned {app!r}, not an ASGI app")
            served = AsgiApp(app, f"{definition.name}.{info.name}")
            await served.lifespan.startup()
            apps[info.name] = served
    except BaseException:
        await shutdown_asgi_apps(apps)
        raise
    return apps


async def shutdown_asgi_apps(apps: dict[str, AsgiApp]) -> None:
    """`lifespan.shutdown` to every app that took part in the lifespan protocol."""
    for served in apps.values():
        try:
            await served.lifespan.shutdown()
        except Exception:
            print(f"corral worker: the lifespan shutdown of {served.lifespan.name} failed:", file=sys.stderr)
            traceback.print_exc()


def http_scope(request: worker_pb2.HttpRequest, state: dict[str, Any] | None = None) -> dict[str, Any]:
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
        "state": dict(state or {}),  # a shallow copy of the lifespan state, as the ASGI spec asks
    }


async def run_asgi(app: Any, request: worker_pb2.HttpRequest, start: StartResponse, body: SendBody,
                   state: dict[str, Any] | None = None) -> None:
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
        await app(http_scope(request, state), receive, send)
    except Exception:
        if not started:
            raise
    finally:
        done.set()
    if not started:
        raise RuntimeError("the ASGI app returned without sending a response")
    if not finished:
        await body(b"", False)
