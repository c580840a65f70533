"""The container entrypoint: import the user's class, run its hooks, serve inputs.

Started by the node as `python -m corral_runtime.worker` with its identity in the environment:
CORRAL_CONTROL_URL, CORRAL_CONTAINER_ID, CORRAL_CONTAINER_TOKEN and CORRAL_BUNDLE_DIR.

Life: connect -> ContainerInit -> import -> @enter(snap=True) -> @enter -> Ready -> inputs
-> Shutdown (or SIGTERM) -> drain -> @exit -> exit 0. A failed import or enter reports InitFailed
and exits 1 without running exit hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.metadata
import inspect
import os
import re
import signal
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc

from corral import _serialization
from corral._definition import ClassDefinition
from corral._parameters import decode_parameters
from corral.cls import Cls
from corral_protocol import AUTHORIZATION_METADATA_KEY, PROTOCOL_VERSION, VERSION_METADATA_KEY
from corral_protocol.v1 import common_pb2, worker_pb2, worker_pb2_grpc


@dataclass(frozen=True)
class Identity:
    control_url: str
    container_id: str
    token: str
    bundle_dir: str

    @classmethod
    def from_env(cls) -> Identity:
        return cls(
            os.environ["CORRAL_CONTROL_URL"], os.environ["CORRAL_CONTAINER_ID"],
            os.environ["CORRAL_CONTAINER_TOKEN"], os.environ.get("CORRAL_BUNDLE_DIR", ""),
        )


class InitFailure(Exception):
    """Importing or entering the user's class failed; carries what to report."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.exc = exc


def load_definition(class_def: common_pb2.ClassDef, bundle_dir: str) -> ClassDefinition:
    if bundle_dir and bundle_dir not in sys.path:
        sys.path.insert(0, bundle_dir)
    module = importlib.import_module(class_def.module)
    target: Any = module
    for part in class_def.name.split("."):
        target = getattr(target, part)
    if not isinstance(target, Cls) or target.definition is None:
        raise TypeError(f"{class_def.module}.{class_def.name} is not a class decorated with @app.cls()")
    return target.definition


_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def missing_requirements(image: common_pb2.ImageSpec) -> list[str]:
    """The image's pip requirements whose distributions are not installed in this environment."""
    missing = []
    for requirement in image.pip_packages:
        match = _REQUIREMENT_NAME.match(requirement)
        if match is None:
            continue
        try:
            importlib.metadata.distribution(match.group(1))
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
    return missing


async def call_hook(function: Any) -> None:
    result = function()
    if inspect.isawaitable(result):
        await result


class Worker:
    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.metadata = (
            (AUTHORIZATION_METADATA_KEY, f"Bearer {identity.token}"),
            (VERSION_METADATA_KEY, str(PROTOCOL_VERSION)),
        )
        self.shutdown = asyncio.Event()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._write_lock = asyncio.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self.definition: ClassDefinition | None = None
        self.instance: Any = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.shutdown.set)
        target = self.identity.control_url.split("://", 1)[-1]
        async with grpc.aio.insecure_channel(target) as channel:
            stream = worker_pb2_grpc.WorkerServiceStub(channel).WorkerSession(metadata=self.metadata)
            await stream.write(worker_pb2.WorkerSessionRequest(hello=worker_pb2.WorkerHello(container_id=self.identity.container_id)))
            first = await stream.read()
            if first is grpc.aio.EOF or first.WhichOneof("message") != "init":
                print("corral worker: the control plane closed the session before sending ContainerInit", file=sys.stderr)
                return 1
            init = first.init
            try:
                await self._initialize(init)
            except InitFailure as failure:
                exc = failure.exc
                await stream.write(worker_pb2.WorkerSessionRequest(init_failed=worker_pb2.InitFailed(
                    exception_type=type(exc).__name__, message=str(exc),
                    traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
                )))
                await stream.done_writing()
                traceback.print_exception(type(exc), exc, exc.__traceback__)
                return 1
            slots = init.concurrency.max_inputs or 1
            self._executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="corral-input")
            await stream.write(worker_pb2.WorkerSessionRequest(ready=worker_pb2.WorkerReady(slots=slots)))
            reader = asyncio.create_task(self._read(stream))
            await self.shutdown.wait()
            reader.cancel()
            if self.tasks:
                await asyncio.wait(list(self.tasks.values()))
            await self._exit_hooks()
            with contextlib.suppress(Exception):
                await stream.done_writing()
        self._executor.shutdown(wait=False)
        return 0

    async def _initialize(self, init: worker_pb2.ContainerInit) -> None:
        try:
            missing = missing_requirements(init.class_def.options.image)
            if missing:
                raise ModuleNotFoundError(
                    f"the class's image needs {', '.join(missing)}, which this node's Python environment lacks; "
                    "install them on the node"
                )
            self.definition = load_definition(init.class_def, self.identity.bundle_dir)
            self.instance = self.definition.new_instance(decode_parameters(init.parameters))
            for hook in self.definition.enter_hooks:
                await call_hook(getattr(self.instance, hook.name))
        except Exception as exc:
            raise InitFailure(exc) from exc

    async def _exit_hooks(self) -> None:
        assert self.definition is not None
        for hook in self.definition.exit_hooks:
            try:
                await call_hook(getattr(self.instance, hook.name))
            except Exception:
                print(f"corral worker: @exit hook {hook.name} raised:", file=sys.stderr)
                traceback.print_exc()

    async def _read(self, stream: Any) -> None:
        try:
            while True:
                message = await stream.read()
                if message is grpc.aio.EOF:
                    break
                kind = message.WhichOneof("message")
                if kind == "input":
                    inp = message.input
                    self.tasks[inp.input_id] = asyncio.create_task(self._run_input(stream, inp))
                elif kind == "shutdown":
                    break
                elif kind == "cancel":
                    task = self.tasks.get(message.cancel.input_id)
                    if task is not None:
                        task.cancel()
        except grpc.aio.AioRpcError as err:
            print(f"corral worker: lost the control plane ({err.code().name}); shutting down", file=sys.stderr)
        finally:
            self.shutdown.set()

    async def _run_input(self, stream: Any, inp: worker_pb2.Input) -> None:
        try:
            result = await self._execute(inp)
        except asyncio.CancelledError:
            self.tasks.pop(inp.input_id, None)
            return
        try:
            async with self._write_lock:
                await stream.write(worker_pb2.WorkerSessionRequest(output=worker_pb2.Output(input_id=inp.input_id, result=result)))
        except Exception as err:
            print(f"corral worker: could not send the output of {inp.input_id}: {err}", file=sys.stderr)
        finally:
            self.tasks.pop(inp.input_id, None)

    async def _execute(self, inp: worker_pb2.Input) -> common_pb2.Result:
        fmt = inp.args.format or _serialization.PICKLE
        try:
            args, kwargs = _serialization.decode_args(inp.args)
            function = getattr(self.instance, inp.method)
            if inspect.iscoroutinefunction(function):
                value = await function(*args, **kwargs)
            else:
                loop = asyncio.get_running_loop()
                value = await loop.run_in_executor(self._executor, lambda: function(*args, **kwargs))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return _serialization.user_error(exc)
        try:
            return _serialization.success(value, fmt)
        except Exception as exc:
            wrapped = TypeError(f"the return value of {inp.method} could not be serialized: {exc}")
            return _serialization.user_error(wrapped)


def main() -> None:
    identity = Identity.from_env()
    code = asyncio.run(Worker(identity).run())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
