"""Timeouts, cancellation and the call context (issue 14, item 5)."""

import asyncio
import os
import time

import corral

app = corral.App("calls")


def container_id() -> str:
    """Which container runs this code: every isolated container is pid 1 of its own pid namespace,
    so pids no longer tell containers apart (outside a container: this process's pid)."""
    return os.environ.get("CORRAL_CONTAINER_ID") or str(os.getpid())


def _log(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


@app.function(max_containers=1)
def busy(events: str, tag: str) -> str:
    """Runs until cancelled (bounded: 60 s), in pure Python so that a cancellation can stop it.
    With tag "pid" it answers its container's id at once."""
    if tag == "pid":
        return container_id()
    _log(events, f"{tag} started in {container_id()}")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.01)
    except BaseException as exc:
        _log(events, f"{tag} stopped by {type(exc).__name__}")
        raise
    return "finished"


@app.function(max_containers=1)
def pid() -> str:
    return container_id()


@app.function()
def input_id() -> str | None:
    return corral.current_input_id()


@app.function()
async def input_id_async() -> str | None:
    await asyncio.sleep(0)
    return corral.current_input_id()


@app.function()
def where() -> bool:
    return corral.is_local()


@app.cls(startup_timeout=2, timeout=600)
class SlowStart:
    @corral.enter()
    def load(self):
        time.sleep(30)

    @corral.method()
    def run(self) -> int:
        return 1


@app.function(max_containers=1)
def sleeper(events: str, seconds: float) -> str:
    """Blocks in one C call (time.sleep), where a raised InputCancelled cannot reach it."""
    if seconds:
        _log(events, f"sleeper started in {container_id()}")
        time.sleep(seconds)
    return container_id()
