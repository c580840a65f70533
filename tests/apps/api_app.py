"""Classes for the class-API end-to-end tests."""

import asyncio
import os

import corral


def container_id() -> str:
    """Which container runs this code: every isolated container is pid 1 of its own pid namespace,
    so pids no longer tell containers apart (outside a container: this process's pid)."""
    return os.environ.get("CORRAL_CONTAINER_ID") or str(os.getpid())

app = corral.App("api")


@app.cls(scaledown_window=2)
class Model:
    name: str = corral.parameter()
    scale: int = corral.parameter(default=1)
    flag: bool = corral.parameter(default=False)
    blob: bytes = corral.parameter(default=b"")

    @corral.enter()
    def load(self):
        self.calls = 0
        self.loaded_in = container_id()

    @corral.method()
    def predict(self, x: int) -> dict:
        self.calls += 1
        return {"name": self.name, "y": x * self.scale, "calls": self.calls, "pid": container_id(), "flag": self.flag, "blob": self.blob}

    @corral.method()
    async def apredict(self, x: int) -> int:
        await asyncio.sleep(0.01)
        return x * self.scale

    @corral.method()
    def echo(self, *args, **kwargs):
        return args, kwargs

    @corral.method()
    def container_env(self, key: str):
        return os.environ.get(key)

    @corral.method()
    def is_local(self) -> bool:
        return corral.is_local()
