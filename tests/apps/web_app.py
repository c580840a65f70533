"""Classes for the web endpoint tests: function endpoints, a parameterized class, an ASGI app,
timeouts, proxy auth, batching and a burst that scales a service up from zero."""

from __future__ import annotations

import os
import time

import pydantic
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

import corral


def container_id() -> str:
    """Which container runs this code: every isolated container is pid 1 of its own pid namespace,
    so pids no longer tell containers apart (outside a container: this process's pid)."""
    return os.environ.get("CORRAL_CONTAINER_ID") or str(os.getpid())

app = corral.App("web")


class Item(pydantic.BaseModel):
    name: str
    price: float


@app.cls(cpu=(0.01, 8), max_containers=2, scaledown_window=30)
class API:
    @corral.method()
    @corral.web_endpoint()
    def health(self) -> dict[str, str]:
        return {"status": "healthy"}

    @corral.method()
    @corral.web_endpoint(method="POST")
    def process(self, data: dict) -> dict[str, object]:
        return {"result": data}

    @corral.fastapi_endpoint()
    def add(self, a: int, b: int = 1, scale: float = 1.0) -> dict[str, float]:
        return {"sum": (a + b) * scale}

    @corral.web_endpoint(method="POST", label="greet")
    def greet(self, name: str, excited: bool = False) -> str:
        return f"Hello, {name}{'!' if excited else '.'}"

    @corral.web_endpoint(method="POST")
    def price(self, item: Item) -> Item:
        return Item(name=item.name.upper(), price=item.price * 2)

    @corral.web_endpoint()
    def listing(self) -> list[object]:
        return [1, "two", None, 3.5]

    @corral.web_endpoint()
    def scalar(self) -> int:
        return 42

    @corral.web_endpoint()
    def fail(self) -> None:
        raise ValueError("bad thing happened")

    @corral.web_endpoint(requires_proxy_auth=True)
    def secret(self) -> str:
        return "classified"


@app.cls(cpu=(0.01, 8), scaledown_window=30)
class Greeter:
    """Parameter values come from the query string, typed by the schema."""

    greeting: str = corral.parameter(default="hello")
    times: int = corral.parameter(default=1)
    shout: bool = corral.parameter(default=False)

    @corral.web_endpoint()
    def greet(self, name: str) -> dict[str, object]:
        text = " ".join([f"{self.greeting} {name}"] * self.times)
        return {"message": text.upper() if self.shout else text, "pid": container_id()}


@app.cls(cpu=(0.01, 8), scaledown_window=30)
class Catalog:
    """Endpoints with docs=True: /docs and /openapi.json under each endpoint's URL."""

    region: str = corral.parameter(default="eu")

    @corral.web_endpoint(docs=True)
    def search(self, q: str, limit: int = 10, tags: list[str] | None = None) -> dict[str, object]:
        """Search the catalog."""
        return {"q": q, "limit": limit, "tags": tags or [], "region": self.region}

    @corral.web_endpoint(method="POST", docs=True)
    def add(self, item: Item) -> Item:
        return item


@app.cls(cpu=(0.01, 8), timeout=2, scaledown_window=30)
class Slow:
    @corral.web_endpoint()
    def nap(self, seconds: float) -> dict[str, float]:
        time.sleep(seconds)
        return {"slept": seconds}


@app.cls(cpu=(0.01, 8), max_containers=3, scaledown_window=60)
class Burst:
    """One input per container: a burst needs several containers."""

    @corral.web_endpoint()
    def work(self, i: int) -> dict[str, int]:
        time.sleep(0.3)
        return {"i": i, "pid": container_id()}


@app.cls(cpu=(0.01, 8), max_containers=1, scaledown_window=30)
class Doubler:
    """A batched web endpoint: concurrent requests are grouped into one call."""

    @corral.web_endpoint(method="POST")
    @corral.batched(max_batch_size=4, wait_ms=3000)
    def double(self, xs: list[int]) -> list[dict[str, int]]:
        return [{"value": x * 2, "batch": len(xs)} for x in xs]


@app.cls(cpu=(0.01, 8), scaledown_window=30)
class Site:
    """An ASGI app, built once per container after the enter hook."""

    @corral.enter()
    def setup(self) -> None:
        self.prefix = "hi"
        self.builds = 0

    @corral.asgi_app(label="site", requires_proxy_auth=False)
    def web(self) -> FastAPI:
        self.builds += 1
        api = FastAPI()

        @api.get("/hello/{name}")
        def hello(name: str) -> dict[str, object]:
            return {"message": f"{self.prefix} {name}", "builds": self.builds, "pid": container_id()}

        @api.post("/echo")
        async def echo(request: Request) -> Response:
            return Response(await request.body(), media_type="application/octet-stream", headers={"x-echo": "yes"})

        @api.get("/where")
        def where(request: Request) -> dict[str, str]:
            return {"root_path": request.scope["root_path"], "path": request.url.path, "query": str(request.query_params)}

        @api.get("/stream")
        def stream(release: str) -> StreamingResponse:
            def lines():  # type: ignore[no-untyped-def]
                yield "first\n"
                deadline = time.monotonic() + 20  # only bounds a hang: the client releases at once
                while not os.path.exists(release) and time.monotonic() < deadline:
                    time.sleep(0.01)
                yield "released\n" if os.path.exists(release) else "gave up\n"

            return StreamingResponse(lines(), media_type="text/plain")

        @api.get("/boom")
        def boom() -> None:
            raise RuntimeError("the route failed")

        return api


@app.cls(cpu=(0.01, 8), scaledown_window=30)
class Private:
    @corral.asgi_app(requires_proxy_auth=True)
    def web(self) -> FastAPI:
        api = FastAPI()

        @api.get("/")
        def root() -> dict[str, str]:
            return {"private": "yes"}

        return api
