"""The ASGI lifespan protocol in the container (`corral_runtime.asgi`), run as uvicorn's
lifespan="auto" runs it: startup, a failed startup, apps without lifespan support, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from corral_protocol.v1 import worker_pb2
from corral_runtime.asgi import Lifespan, LifespanStartupFailed, run_asgi


async def get(app: Any, path: str, state: dict[str, Any]) -> tuple[int, bytes]:
    answer: dict[str, Any] = {"body": b""}

    async def start(status: int, headers: list[tuple[bytes, bytes]]) -> None:
        answer["status"] = status

    async def body(data: bytes, more: bool) -> None:
        answer["body"] += data

    await run_asgi(app, worker_pb2.HttpRequest(method="GET", path=path), start, body, state)
    return answer["status"], answer["body"]


def test_startup_state_reaches_requests_and_shutdown_runs() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        events.append("startup")
        yield {"greeting": "hello"}
        events.append("shutdown")

    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"greeting": request.state.greeting})

    app = Starlette(routes=[Route("/", hello)], lifespan=lifespan)

    async def main() -> None:
        life = Lifespan(app, "T.web")
        await life.startup()
        assert life.supported and events == ["startup"]
        assert await get(app, "/", life.state) == (200, b'{"greeting":"hello"}')
        await life.shutdown()
        assert events == ["startup", "shutdown"]

    asyncio.run(main())


def test_a_failed_startup_raises_with_the_apps_message() -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        raise RuntimeError("no database")
        yield

    async def main() -> None:
        with pytest.raises(LifespanStartupFailed, match="no database"):
            await Lifespan(Starlette(lifespan=lifespan), "T.web").startup()

    asyncio.run(main())


def test_an_app_without_lifespan_support_is_served_anyway(capsys: pytest.CaptureFixture[str]) -> None:
    async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http", "only http"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def returns(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        await bare(scope, receive, send)

    async def main() -> None:
        for app in (bare, returns):
            life = Lifespan(app, "T.web")
            await life.startup()
            assert not life.supported
            assert await get(app, "/", life.state) == (200, b"ok")
            await life.shutdown()  # nothing to send

    asyncio.run(main())
    assert "does not support the lifespan protocol" in capsys.readouterr().err
