"""Classes that record their lifecycle in an events file given as a parameter."""

import asyncio
import os

import corral

app = corral.App("lifecycle")


def record(path: str, line: str) -> None:
    with open(path, "a") as f:
        # Not the pid: a snapshot-enabled container is pid 1 of its own pid namespace.
        f.write(f"{line} ct={os.environ['CORRAL_CONTAINER_ID']}\n")


class Base:
    @corral.enter()
    def base_enter(self):
        record(self.events, "enter:base")


@app.cls(scaledown_window=1, enable_memory_snapshot=True)
class Tracker(Base):
    events: str = corral.parameter()
    tag: str = corral.parameter(default="a")

    @corral.enter()
    def setup(self):
        record(self.events, f"enter:setup tag={self.tag}")
        self.count = 0

    @corral.enter(snap=True)
    def snap_load(self):
        record(self.events, "enter:snap")

    @corral.exit()
    def teardown(self):
        record(self.events, f"exit tag={self.tag}")

    @corral.method()
    def bump(self) -> int:
        self.count += 1
        return self.count

    @corral.method()
    def container(self) -> str:
        return os.environ["CORRAL_CONTAINER_ID"]


@app.cls(scaledown_window=1)
class AsyncTracker:
    events: str = corral.parameter()

    @corral.enter()
    async def setup(self):
        await asyncio.sleep(0)
        record(self.events, "enter:async")
        self.items = []

    @corral.exit()
    async def teardown(self):
        await asyncio.sleep(0)
        record(self.events, "exit:async")

    @corral.method()
    async def add(self, item: str) -> list:
        await asyncio.sleep(0)
        self.items.append(item)
        return list(self.items)
