"""Calls from inside a container (issue 14, item 6): functions and classes of one app calling each
other, and a lookup of another deployed app."""

import os

import corral
from corral_protocol import env
from corral_protocol.v1 import control_pb2

app = corral.App("nested")


def container_id() -> str:
    """Which container runs this code: every isolated container is pid 1 of its own pid namespace,
    so pids no longer tell containers apart (outside a container: this process's pid)."""
    return os.environ.get("CORRAL_CONTAINER_ID") or str(os.getpid())


@app.cls()
class Recorder:
    @corral.method()
    def record(self, path: str, line: str) -> str:
        with open(path, "a") as f:
            f.write(line + "\n")
        return container_id()


@app.function()
def square(x: int) -> int:
    return x * x


@app.function()
def countdown(n: int):
    yield from range(n, 0, -1)


@app.function()
def fan_out(n: int) -> list[int]:
    return list(square.map(range(n)))


@app.function()
def orchestrate(path: str) -> dict:
    pid = Recorder().record.remote(path, "direct call")
    call = Recorder().record.spawn(path, "spawned")
    spawned_pid = call.get(timeout=60)
    return {"caller": container_id(), "recorder": pid, "spawned": spawned_pid, "items": list(countdown.remote_gen(3))}


@app.function()
def call_other_app(app_name: str) -> int:
    return corral.Function.from_name(app_name, "square").remote(7)


@app.function()
def try_forbidden() -> str:
    client = corral.Client(os.environ[env.CORRAL_CONTROL_URL], os.environ[env.CORRAL_CONTAINER_TOKEN])
    try:
        client.call(client.stub.ListSecrets, control_pb2.ListSecretsRequest())
    except corral.exception.Error as err:
        return type(err).__name__ + ": " + str(err)
    return "allowed"


@app.function()
def my_token() -> str:
    return os.environ[env.CORRAL_CONTAINER_TOKEN]
