"""Generators (sync and async) for the streaming end-to-end tests."""

import asyncio
import os
import time

import corral

app = corral.App("streaming")


def container_id() -> str:
    """Which container runs this code: every isolated container is pid 1 of its own pid namespace,
    so pids no longer tell containers apart (outside a container: this process's pid)."""
    return os.environ.get("CORRAL_CONTAINER_ID") or str(os.getpid())


def _wait_for_file(path: str) -> None:
    deadline = time.monotonic() + 30  # bounds a hang only
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


@app.function()
def countdown(n: int):
    yield from range(n, 0, -1)


@app.function()
def handshake(path: str):
    """Yields "first", then waits for the caller to create `path` (proof it got "first" early)."""
    yield "first"
    _wait_for_file(path)
    yield "second"


@app.function()
def endless(events: str):
    try:
        i = 0
        while True:
            yield i
            i += 1
            time.sleep(0.01)
    finally:
        with open(events, "a") as f:
            f.write("sync closed\n")


@app.function()
def raises_after_one():
    yield 1
    raise RuntimeError("generator broke")


@app.cls()
class Tokens:
    prefix: str = corral.parameter(default="tok")

    @corral.method()
    async def stream(self, n: int):
        for i in range(n):
            await asyncio.sleep(0)
            yield f"{self.prefix}{i}"

    @corral.method()
    async def endless(self, events: str):
        try:
            i = 0
            while True:
                yield i
                i += 1
                await asyncio.sleep(0.01)
        finally:
            with open(events, "a") as f:
                f.write("async closed\n")

    @corral.method()
    async def watched(self, events: str, gate: str = ""):
        """Yields its input id (a direct input's starts "di-"), then, once `gate` exists (when given),
        numbers without end; records its close in `events`."""
        try:
            yield corral.current_input_id()
            if gate:
                await asyncio.to_thread(_wait_for_file, gate)
            i = 0
            while True:
                yield i
                i += 1
                await asyncio.sleep(0.01)
        finally:
            with open(events, "a") as f:
                f.write("watched closed\n")

    @corral.method()
    def pid(self) -> str:
        return container_id()


@app.function()
@corral.fastapi_endpoint(method="GET")
def tokens(n: int = 3, gate: str = ""):
    """An LLM-style token stream: a generator endpoint. With `gate`, it waits after the first token."""
    yield "tok0 "
    if gate:
        _wait_for_file(gate)
    for i in range(1, n):
        yield f"tok{i} "


@app.function()
@corral.fastapi_endpoint(method="GET")
def sse(n: int = 2):
    from fastapi.responses import StreamingResponse

    async def events():
        for i in range(n):
            await asyncio.sleep(0)
            yield f"data: {i}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@app.function()
@corral.fastapi_endpoint(method="GET")
async def endless_web(events: str):
    try:
        i = 0
        while True:
            yield f"{i}\n"
            i += 1
            await asyncio.sleep(0.01)
    finally:
        with open(events, "a") as f:
            f.write("web closed\n")
