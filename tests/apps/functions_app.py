"""Plain functions (`@app.function`) for the functions end-to-end tests."""

import asyncio
import os

import corral

app = corral.App("functions")


def container_id() -> str:
    """Which container runs this code: every isolated container is pid 1 of its own pid namespace,
    so pids no longer tell containers apart (outside a container: this process's pid)."""
    return os.environ.get("CORRAL_CONTAINER_ID") or str(os.getpid())


@app.function(scaledown_window=5, timeout=60)
def square(x: int) -> int:
    return x * x


@app.function()
async def add(a: int, b: int = 1) -> int:
    await asyncio.sleep(0)
    return a + b


@app.function()
def pid() -> str:
    return container_id()


@app.function()
def record(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


@app.function()
@corral.concurrent(max_inputs=4)
async def slow_echo(x: str) -> str:
    await asyncio.sleep(0.05)
    return x


@app.function()
@corral.batched(max_batch_size=8, wait_ms=50)
def double_all(xs: list[int]) -> list[int]:
    return [2 * x for x in xs]


@app.function()
@corral.fastapi_endpoint(method="GET")
def hello(name: str = "world") -> dict:
    return {"hello": name}


@app.function()
def fails() -> None:
    raise ValueError("from a function")
