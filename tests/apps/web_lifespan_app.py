"""ASGI apps and the lifespan protocol: a FastAPI app whose lifespan sets state that routes read
and, at shutdown, writes to a marker file before the @exit hook does; one whose startup fails;
and a bare ASGI app that does not support lifespan at all."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from fastapi import FastAPI, Request

import corral


def container_id() -> str:
    """Which container runs this code: every isolated container is pid 1 of its own pid namespace,
    so pids no longer tell containers apart (outside a container: this process's pid)."""
    return os.environ.get("CORRAL_CONTAINER_ID") or str(os.getpid())

app = corral.App("web-lifespan")


def _append(path: str, line: str) -> None:
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


@app.cls(cpu=(0.01, 8), scaledown_window=60)
class Life:
    marker: str = corral.parameter(default="")

    @corral.enter()
    def setup(self) -> None:
        _append(self.marker, "enter")

    @corral.asgi_app(label="life")
    def web(self) -> FastAPI:
        _append(self.marker, "build")

        @contextlib.asynccontextmanager
        async def lifespan(api: FastAPI):  # type: ignore[no-untyped-def]
            _append(self.marker, "lifespan-startup")
            api.state.started = f"started by {container_id()}"
            yield {"pool": "ready"}  # lifespan state: copied into every request's scope
            _append(self.marker, "lifespan-shutdown")

        api = FastAPI(lifespan=lifespan)

        @api.get("/state")
        def state(request: Request) -> dict[str, Any]:
            return {"started": request.app.state.started, "pool": request.state.pool, "pid": container_id()}

        return api

    @corral.exit()
    def bye(self) -> None:
        _append(self.marker, "exit")


@app.cls(cpu=(0.01, 8), scaledown_window=60)
class Broken:
    @corral.asgi_app(label="broken")
    def web(self) -> FastAPI:
        @contextlib.asynccontextmanager
        async def lifespan(api: FastAPI):  # type: ignore[no-untyped-def]
            raise RuntimeError("the database is not there")
            yield

        return FastAPI(lifespan=lifespan)


@app.cls(cpu=(0.01, 8), scaledown_window=60)
class Bare:
    """A plain ASGI callable that knows only HTTP: it raises on the lifespan scope."""

    @corral.asgi_app(label="bare")
    def web(self) -> Any:
        async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                raise ValueError(f"unsupported scope {scope['type']}")
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"bare ok"})

        return asgi
