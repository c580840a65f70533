"""The container entrypoint: import the user's class, run its hooks, serve inputs.

Started by the node as `python -m corral_runtime.worker` with its identity in the environment:
CORRAL_CONTROL_URL, CORRAL_CONTAINER_ID, CORRAL_CONTAINER_TOKEN and CORRAL_BUNDLE_DIR (a warm-pool
container, `--warm`, gets them on stdin when assigned: snapshot_point.py).

Life: connect -> ContainerInit -> import -> @enter(snap=True) -> @enter -> Ready -> inputs
-> Shutdown (or SIGTERM) -> drain -> @exit -> exit 0. A failed import or enter reports InitFailed
and exits 1 without running exit hooks. With ContainerInit.take_snapshot the worker stops after the
snap hooks: SnapshotReady, close the connection, wait at the snapshot point (snapshot_point.py) for
a new identity, reconnect, then the other @enter hooks (a restored copy resumes there too).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import grpc

from corral import container_api as sdk
from corral_protocol import AUTHORIZATION_METADATA_KEY, PROTOCOL_VERSION, VERSION_METADATA_KEY, env, payloads, transport
from corral_protocol.options import batched_method, effective_max_inputs, effective_timeout_s
from corral_protocol.v1 import worker_pb2, worker_pb2_grpc
from corral_runtime import log_capture, snapshot_point
from corral_runtime.asgi import AsgiApp, build_asgi_apps, shutdown_asgi_apps
from corral_runtime.batching import Batcher
from corral_runtime.control_channel import open_channel
from corral_runtime.direct import DirectServer
from corral_runtime.held_outputs import HeldOutputs
from corral_runtime.redaction import Redactor
from corral_runtime.runner import InputRunner
from corral_runtime.slots import SlotGate
from corral_runtime.snapshot_point import SNAPSHOT_POINT_LINE, SnapshotPointError, apply_environment, wait_for_identity
from corral_runtime.web import HttpInputs
from corral_runtime.worker_direct_watch import DirectWatch
from corral_runtime.worker_inputs import CancelGrace, run_pushed_input
from corral_runtime.worker_setup import Identity, InitFailure, batched_capacity, load_class, run_enter_hooks, run_exit_hooks

# Worker._session's code for "the snap hooks ran and no connection is open: dump me now".
SNAPSHOT_POINT = -1
# Exit code of a worker whose session with the control plane ended without a Shutdown.
SESSION_LOST = 4
# Payloads up to the limit (corral_protocol.payloads) in both directions: gRPC's default 4 MiB
# receive limit once ended the session, and so the container, on any larger pushed input.
CHANNEL_OPTIONS = [
    *payloads.grpc_message_options(),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
_CLOSE = object()  # the outbox's last item: finish writing


class Worker:
    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.metadata = self._metadata(identity)
        self.shutdown = asyncio.Event()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        # One writer task owns the stream; everything else queues its messages here. Cancelling an
        # input's task can then never land inside a stream write (gRPC would cancel the whole stream).
        self._outbox: asyncio.Queue[Any] = asyncio.Queue()
        self.lost: str | None = None  # why the session ended without a Shutdown
        self.graceful = False  # a Shutdown (or SIGTERM) came first: what happens to the stream later is no loss
        self._executor: ThreadPoolExecutor | None = None
        self.definition: sdk.ClassDefinition | None = None
        self.instance: Any = None
        self.gate: SlotGate | None = None
        self.runner: InputRunner | None = None
        self.batcher: Batcher | None = None
        self.direct: DirectServer | None = None
        self.asgi_apps: dict[str, AsgiApp] = {}
        self.http: HttpInputs | None = None
        self.redactor = Redactor({})
        self.direct_watch: DirectWatch | None = None
        self.cancel_grace = CancelGrace(self._others_waiting, self._send)
        self.held = HeldOutputs()  # outputs of pushed inputs that finished after the session ended
        self._http_inputs: set[str] = set()
        self._pushed_at: dict[str, float] = {}  # input id -> when it came (loop time): its timeout's start

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        log_capture.CAPTURE.install()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop_gracefully)
        code = await self._session(loop, restored=False)
        while code == SNAPSHOT_POINT:
            # No connection is open: the node dumps this process now, or this is a restored copy.
            try:
                identity = wait_for_identity()
            except SnapshotPointError as err:
                print(f"corral worker: {err}", file=sys.stderr)
                return 1
            log_capture.CAPTURE.fds.reclaim()
            apply_environment(identity)
            self.identity = Identity.from_env()
            self.metadata = self._metadata(self.identity)
            code = await self._session(loop, restored=identity.restored)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        return code

    @staticmethod
    def _metadata(identity: Identity) -> tuple[tuple[str, str], ...]:
        return ((AUTHORIZATION_METADATA_KEY, f"Bearer {identity.token}"), (VERSION_METADATA_KEY, str(PROTOCOL_VERSION)))

    async def _session(self, loop: asyncio.AbstractEventLoop, restored: bool) -> int:
        """One connection to the control plane: init, hooks, serve. Returns the exit code, or
        SNAPSHOT_POINT when the snap hooks ran and the node is to dump this process."""
        # Secrets arrive with the identity (after the dump, for a snapshot's worker): read them now.
        self.redactor = Redactor.from_environ()
        log_capture.CAPTURE.redactor = self.redactor
        roots = transport.trusted_roots(None) if transport.server_address(self.identity.control_url).tls else None
        async with open_channel(self.identity.control_url, roots, CHANNEL_OPTIONS) as channel:
            stream = worker_pb2_grpc.WorkerServiceStub(channel).WorkerSession(metadata=self.metadata)
            hello = worker_pb2.WorkerHello(container_id=self.identity.container_id, restored=restored)
            await stream.write(worker_pb2.WorkerSessionRequest(hello=hello))
            # The aio stubs type read() as `object | response` (EOF is a plain object); EOF is checked below.
            first = cast(worker_pb2.WorkerSessionResponse, await stream.read())
            if first is grpc.aio.EOF or first.WhichOneof("message") != "init":
                print("corral worker: the control plane closed the session before sending ContainerInit", file=sys.stderr)
                return 1
            init = first.init
            try:
                await self._initialize(init)
            except InitFailure as failure:
                exc = failure.exc
                formatted = self.redactor.text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
                await stream.write(worker_pb2.WorkerSessionRequest(init_failed=worker_pb2.InitFailed(
                    exception_type=type(exc).__name__, message=self.redactor.text(str(exc)), traceback=formatted,
                )))
                await stream.done_writing()
                print(formatted, end="", file=sys.stderr)
                return 1
            if init.take_snapshot:
                await stream.write(worker_pb2.WorkerSessionRequest(snapshot_ready=worker_pb2.SnapshotReady()))
                await stream.done_writing()
                while await stream.read() is not grpc.aio.EOF:  # the control plane ends the session
                    pass
            else:
                return await self._serve(loop, stream, init)
        # The channel is closed: tell the node (on stdout, which it reads) to dump this process,
        # with the node's pipes as fds 1 and 2 (a restored copy gets new ones in their place).
        log_capture.CAPTURE.fds.release()
        print(SNAPSHOT_POINT_LINE, flush=True)
        return SNAPSHOT_POINT

    async def _serve(self, loop: asyncio.AbstractEventLoop, stream: Any, init: worker_pb2.ContainerInit) -> int:
        """Ready, then inputs until shutdown; drain and run the exit hooks. Returns the exit code:
        0 after a Shutdown (or SIGTERM), SESSION_LOST when the session ended any other way."""
        capacity = self._start_serving(init, loop)
        address = self.direct.start() if self.direct is not None else ""
        await stream.write(worker_pb2.WorkerSessionRequest(ready=worker_pb2.WorkerReady(slots=capacity, direct_address=address)))
        writer = asyncio.create_task(self._write(stream))
        background = [
            asyncio.create_task(self._read(stream)),
            asyncio.create_task(log_capture.ship(log_capture.CAPTURE, self._send)),
        ]
        if self.direct_watch is not None:
            background += [asyncio.create_task(self.direct_watch.report_load()),
                           asyncio.create_task(self.direct_watch.watch_timeouts())]
        await self.shutdown.wait()
        if self.lost is not None:
            # The control plane is gone (it may come back: a restarted plane awaits the results of
            # the spawned inputs it stored as running here) or gave up on this container. Pushed
            # inputs finish and their outputs are held for delivery; HTTP requests have nowhere to go.
            print(f"corral worker: {self.lost}; finishing running inputs, then exiting", file=sys.stderr)
            self.held.take_unsent(self._outbox)
            for input_id, task in list(self.tasks.items()):
                if input_id in self._http_inputs:
                    task.cancel()
            # Nobody enforces the class timeout now: the worker stops an input that runs past it.
            background.append(asyncio.create_task(self._stop_overdue(effective_timeout_s(init.options))))
        await self._drain()
        if self.lost is not None:
            roots = transport.trusted_roots(None) if transport.server_address(self.identity.control_url).tls else None
            await self.held.deliver(self.identity.control_url, roots, CHANNEL_OPTIONS, self.metadata, self.identity.container_id)
        for task in background:
            task.cancel()
        if self.direct_watch is not None:
            await self.direct_watch.report_load_once(force=True)
        await shutdown_asgi_apps(self.asgi_apps)  # ASGI lifespan shutdown, before the @exit hooks
        assert self.definition is not None
        await run_exit_hooks(self.definition, self.instance)
        await log_capture.flush(log_capture.CAPTURE, self._send)
        self._outbox.put_nowait(_CLOSE)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer, timeout=10)
        if not writer.done():
            writer.cancel()
        if self.lost is None:
            with contextlib.suppress(Exception):
                await stream.done_writing()
        if self.lost is not None:
            print(f"corral worker: exiting with code {SESSION_LOST}: {self.lost}", file=sys.stderr)
            return SESSION_LOST
        return 0

    def _stop_gracefully(self) -> None:
        self.graceful = True
        self.shutdown.set()

    def _lose(self, why: str) -> None:
        if self.graceful:  # already stopping on request; the control plane may close its side first
            print(f"corral worker: while stopping: {why}", file=sys.stderr)
        elif self.lost is None:
            self.lost = why
        self.shutdown.set()

    async def _write(self, stream: Any) -> None:
        """The only task that writes to the stream, in the order messages were queued."""
        while True:
            message = await self._outbox.get()
            if message is _CLOSE:
                return
            try:
                await stream.write(message)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the stream is gone: nothing more can be sent on it
                self.held.hold(message)
                code = err.code().name if isinstance(err, grpc.aio.AioRpcError) else type(err).__name__
                self._lose(f"lost the control plane while sending ({code}: {err})")
                return

    def _start_serving(self, init: worker_pb2.ContainerInit, loop: asyncio.AbstractEventLoop) -> int:
        """Slots, the thread pool, the batcher and the direct server; returns the container's capacity."""
        assert self.definition is not None
        max_inputs = effective_max_inputs(init.options)
        capacity = max_inputs
        batched = batched_method(init.class_def, init.options)
        if batched is not None:
            name, config = batched
            self.batcher = Batcher(getattr(self.instance, name), config.max_batch_size, config.wait_ms, loop)
            # One batch runs while the next fills; `max_inputs` may let the container hold more.
            capacity = batched_capacity(max_inputs, config.max_batch_size)
        # Sync methods pushed by the control plane run here, up to max_inputs at once (a batched
        # method runs on the batcher's thread instead).
        self._executor = ThreadPoolExecutor(max_workers=max_inputs, thread_name_prefix="corral-input")
        self.gate = SlotGate(capacity, loop)
        callable_methods = {name for name, info in self.definition.methods.items() if not info.is_asgi_app}
        self.runner = InputRunner(self.instance, callable_methods, loop, self._executor, self.batcher, self.redactor)
        self.http = HttpInputs(self.definition, self.runner, self.asgi_apps, dev_mode=os.environ.get(env.CORRAL_APP_KIND) == env.APP_KIND_EPHEMERAL)
        if init.direct_token:
            host = os.environ.get(env.CORRAL_DIRECT_HOST, "127.0.0.1")
            timeout = effective_timeout_s(init.options)
            self.direct = DirectServer(host, init.direct_token, self.gate, self.runner, timeout)
            self.direct_watch = DirectWatch(self.direct, self.definition.name, self._send)
        return capacity

    async def _drain(self) -> None:
        """Finish every accepted input (pushed and direct) before the exit hooks run."""
        if self.direct is not None:
            self.direct.drain()
        while self.tasks or (self.direct is not None and self.direct.running):
            if self.tasks:
                await asyncio.wait(list(self.tasks.values()), timeout=0.05)
            else:
                await asyncio.sleep(0.01)
        if self.batcher is not None:
            await asyncio.to_thread(self.batcher.close)

    async def _initialize(self, init: worker_pb2.ContainerInit) -> None:
        """Import the class and run its @enter hooks. The snap=True hooks run once per process
        image: a worker past its snapshot point (dumped, or restored from the dump) has run them."""
        try:
            if self.definition is None:
                self.definition, self.instance = await load_class(init, self.identity.bundle_dir)
            if init.take_snapshot:
                return
            await run_enter_hooks(self.definition, self.instance, snap=False)
            self.asgi_apps = await build_asgi_apps(self.definition, self.instance)
        except Exception as exc:
            raise InitFailure(exc) from exc

    async def _send(self, message: worker_pb2.WorkerSessionRequest) -> None:
        """Queue a message for the writer task; never blocks, so a cancellation cannot split a write."""
        self._outbox.put_nowait(message)

    async def _read(self, stream: Any) -> None:
        why = "the control plane ended the session without a Shutdown"
        try:
            while True:
                message = await stream.read()
                if message is grpc.aio.EOF:
                    break
                kind = message.WhichOneof("message")
                if kind == "input":
                    inp = message.input
                    self._pushed_at[inp.input_id] = asyncio.get_running_loop().time()
                    started = self.tasks[inp.input_id] = asyncio.create_task(self._run_input(inp))
                    started.add_done_callback(functools.partial(self._forget_pushed, inp.input_id))
                elif kind == "shutdown":
                    why = ""
                    self.graceful = True
                    break
                elif kind == "cancel":
                    # Only the input's own task: its user call and its response stop, nothing else.
                    task = self.tasks.get(message.cancel.input_id)
                    if task is not None:
                        task.cancel()
                        self.cancel_grace.stop_sync_method(message.cancel.input_id)
        except asyncio.CancelledError:
            why = ""  # the worker itself is stopping (SIGTERM, drained)
            raise
        except grpc.aio.AioRpcError as err:
            why = f"lost the control plane ({err.code().name}: {err.details()})"
        except Exception as err:
            why = f"the session with the control plane failed ({type(err).__name__}: {err})"
        finally:
            if why:
                self._lose(why)
            else:
                self.shutdown.set()

    def _forget_pushed(self, input_id: str, _: object) -> None:
        self._pushed_at.pop(input_id, None)

    async def _stop_overdue(self, timeout_s: float) -> None:
        """After the session is lost: cancel each pushed input once it has run `timeout_s` (its class
        timeout), as the plane would have; its output is then not delivered (the plane times it out)."""
        loop = asyncio.get_running_loop()
        while self.tasks:
            for input_id, task in list(self.tasks.items()):
                if loop.time() - self._pushed_at.get(input_id, loop.time()) >= timeout_s and not task.done():
                    print(f"corral worker: input {input_id} ran past its timeout of {timeout_s:g} s "
                          "while the control plane was away; stopping it", file=sys.stderr)
                    task.cancel()
                    self.cancel_grace.stop_sync_method(input_id)
            await asyncio.sleep(0.2)

    def _others_waiting(self, input_id: str) -> bool:
        return any(other != input_id for other in self.tasks) or bool(self.direct is not None and self.direct.running)

    async def _run_input(self, inp: worker_pb2.Input) -> None:
        assert self.gate is not None and self.runner is not None and self.http is not None
        try:
            result = await run_pushed_input(inp, self.gate, self.runner, self.http, self._http_inputs, self._send)
        except asyncio.CancelledError:
            self.tasks.pop(inp.input_id, None)
            return
        except Exception as err:  # the stream broke while answering an HTTP input
            print(f"corral worker: could not answer {inp.input_id}: {err}", file=sys.stderr)
            self.tasks.pop(inp.input_id, None)
            return
        if result is None:  # an HTTP request, answered on the stream
            self.tasks.pop(inp.input_id, None)
            return
        try:
            message = worker_pb2.WorkerSessionRequest(output=worker_pb2.Output(input_id=inp.input_id, result=result))
            if self.lost is not None:
                self.held.hold(message)  # the session is gone: delivered after the drain
            else:
                await self._send(message)
        except Exception as err:
            print(f"corral worker: could not send the output of {inp.input_id}: {err}", file=sys.stderr)
        finally:
            self.tasks.pop(inp.input_id, None)

def main() -> None:
    if snapshot_point.WARM_ARGUMENT in sys.argv[1:]:  # a warm-pool container: its identity comes on stdin when assigned
        snapshot_point.await_assignment()
    identity = Identity.from_env()
    code = asyncio.run(Worker(identity).run())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
