"""Classes for the serving tests: concurrency slots, batching, parallel scale-up, backpressure.

Methods report what they saw (pids, execution intervals, batch sizes) so that tests assert counts
and orderings, never wall-clock thresholds.
"""

from __future__ import annotations

import asyncio
import os
import time

import corral


def container_id() -> str:
    """Which container runs this code: every isolated container is pid 1 of its own pid namespace,
    so pids no longer tell containers apart (outside a container: this process's pid)."""
    return os.environ.get("CORRAL_CONTAINER_ID") or str(os.getpid())

app = corral.App("serving")


@app.cls(cpu=(0.01, 8), max_containers=1, scaledown_window=30)
@corral.concurrent(max_inputs=10)
class SyncSlots:
    """Ten sync inputs at once on one container (the decorator form)."""

    @corral.method()
    def nap(self, seconds: float) -> tuple[int, float, float]:
        start = time.time()
        time.sleep(seconds)
        return container_id(), start, time.time()


@app.cls(cpu=(0.01, 8), max_containers=1, scaledown_window=30)
class AsyncSlots:
    """Async inputs share the container's event loop; made concurrent with `with_concurrency`."""

    @corral.method()
    async def nap(self, seconds: float) -> tuple[int, float, float]:
        start = time.time()
        await asyncio.sleep(seconds)
        return container_id(), start, time.time()


@app.cls(cpu=(0.01, 8), max_containers=1, scaledown_window=30)
class Embedder:
    """`@corral.batched`: one list per argument in, one list out."""

    @corral.batched(max_batch_size=4, wait_ms=3000)
    def embed(self, xs: list[int], ys: list[int]) -> list[tuple[int, int]]:
        return [(x * 10 + y, len(xs)) for x, y in zip(xs, ys, strict=True)]


@app.cls(cpu=(0.01, 8), max_containers=1, scaledown_window=30)
class QuickBatch:
    """Batched with a short wait: a lone input closes its batch after `wait_ms`."""

    @corral.batched(max_batch_size=64, wait_ms=50)
    async def double(self, xs: list[int]) -> list[tuple[int, int]]:
        return [(x * 2, len(xs)) for x in xs]


@app.cls(cpu=(0.01, 8), max_containers=1, scaledown_window=30)
class Scaler:
    """A plain method, batched only through `Cls.with_batching`."""

    @corral.method()
    def scale(self, xs: list[float]) -> list[float]:
        return [x * 3 for x in xs]


@app.cls(cpu=(0.01, 8), max_containers=1, scaledown_window=30)
class BadBatch:
    """Breaks the batching contract on request: raise, return a non-list, or a short list."""

    @corral.batched(max_batch_size=3, wait_ms=3000)
    def run(self, modes: list[str]) -> object:
        if "raise" in modes:
            raise ValueError(f"batch of {len(modes)} refused")
        if "dict" in modes:
            return {"not": "a list"}
        if "short" in modes:
            return modes[:-1]
        return modes


@app.cls(cpu=(0.01, 8), max_containers=4, scaledown_window=30)
class SlowStart:
    """Its enter hook takes a while and records when it ran: scale-up starts containers in parallel."""

    events: str = corral.parameter()

    @corral.enter()
    def warm_up(self) -> None:
        start = time.time()
        time.sleep(1.0)
        with open(self.events, "a") as f:
            f.write(f"enter {container_id()} {start} {time.time()}\n")

    @corral.method()
    def work(self, seconds: float) -> int:
        time.sleep(seconds)
        return container_id()


@app.cls(cpu=(0.01, 8), max_containers=1, scaledown_window=30)
class Blocker:
    """Holds its only container while the queue behind it fills (backpressure)."""

    @corral.method()
    def hold(self, path: str) -> str:
        while not os.path.exists(path):
            time.sleep(0.02)
        return "released"


@app.cls(cpu=(0.01, 8), max_containers=1, scaledown_window=30)
class Bystander:
    @corral.method()
    def ping(self) -> str:
        return "pong"


bound_app = corral.App("serving-bound")


@bound_app.cls(cpu=(0.01, 8), max_containers=1, scaledown_window=30)
class QueueHolder:
    """Like Blocker, in an app of its own, for a cluster whose queues hold 5 inputs."""

    @corral.method()
    def hold(self, path: str) -> str:
        while not os.path.exists(path):
            time.sleep(0.02)
        return "released"
