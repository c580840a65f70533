"""The container's side of the direct call path.

Clients that hold a route (address + token, from the control plane's GetRoutes) connect here and
send inputs without passing through the control plane. Each connection has its own thread and
carries one input at a time, so a sync method runs on the thread that read its input and writes
its output: no thread hop on the hot path. Admission shares the container's `SlotGate` with the
pushed inputs; a full or draining container answers at once with `DirectRejected`, and the
client sends the input through the control plane's queue instead. Nothing is dropped.
"""

from __future__ import annotations

import hmac
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

from corral_protocol import PROTOCOL_VERSION
from corral_protocol.framing import FrameError, encode, read_frame
from corral_protocol.v1 import common_pb2, worker_pb2
from corral_runtime.runner import InputRunner
from corral_runtime.slots import SlotGate

MAX_CONNECTIONS = 4096
W = worker_pb2


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    answered: set[str] = field(default_factory=set)  # input ids answered early (by the timeout watchdog)

    def send(self, response: worker_pb2.DirectResponse, input_id: str = "") -> None:
        data = encode(response.SerializeToString())
        with self.write_lock:
            if input_id and input_id in self.answered:
                self.answered.discard(input_id)
                return
            self.sock.sendall(data)


@dataclass
class RunningInput:
    input_id: str
    method: str
    deadline: float
    connection: _Connection


class DirectServer:
    def __init__(self, host: str, token: str, gate: SlotGate, runner: InputRunner, timeout_s: float) -> None:
        self.token = token
        self.gate = gate
        self.runner = runner
        self.timeout_s = timeout_s
        self.running: dict[str, RunningInput] = {}
        self.served = 0
        self.draining = False
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._listener = socket.create_server((host, 0), backlog=1024)
        bound_host, port = self._listener.getsockname()[:2]
        self.address = f"{bound_host}:{port}"
        self._thread = threading.Thread(target=self._accept, name="corral-direct-accept", daemon=True)

    def start(self) -> str:
        self._thread.start()
        return self.address

    def drain(self) -> None:
        """Stop taking direct inputs: new ones are answered DRAINING; running ones finish."""
        self.draining = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept thread
        except OSError:
            pass
        self._listener.close()

    def expired(self, now: float) -> list[RunningInput]:
        return [r for r in list(self.running.values()) if r.deadline <= now]

    def answer(self, running: RunningInput, result: common_pb2.Result) -> None:
        """Answer an input from outside its thread (the timeout watchdog); its own answer is dropped."""
        connection = running.connection
        data = encode(W.DirectResponse(output=W.Output(input_id=running.input_id, result=result)).SerializeToString())
        with connection.write_lock:
            connection.answered.add(running.input_id)
            try:
                connection.sock.sendall(data)
            except OSError:
                pass

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # drained
            if len(self._connections) >= MAX_CONNECTIONS:
                sock.close()
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = _Connection(sock)
            with self._lock:
                self._connections.add(connection)
            threading.Thread(target=self._serve, args=(connection,), name="corral-direct", daemon=True).start()

    def _serve(self, connection: _Connection) -> None:
        sock = connection.sock
        try:
            if not self._hello(connection):
                return
            while True:
                frame = read_frame(sock)
                if frame is None:
                    return
                request = W.DirectRequest.FromString(frame)
                if request.WhichOneof("message") != "input":
                    return
                self._handle(connection, request.input)
        except (OSError, FrameError):
            return
        except Exception as err:  # a malformed frame: drop this connection, keep serving others
            print(f"corral worker: closing a direct connection: {err}", file=sys.stderr)
        finally:
            with self._lock:
                self._connections.discard(connection)
            sock.close()

    def _hello(self, connection: _Connection) -> bool:
        frame = read_frame(connection.sock)
        if frame is None:
            return False
        request = W.DirectRequest.FromString(frame)
        hello = request.hello if request.WhichOneof("message") == "hello" else None
        if hello is not None and hello.protocol_version == PROTOCOL_VERSION and hmac.compare_digest(hello.token, self.token):
            return True
        why = "protocol version mismatch" if hello is not None and hmac.compare_digest(hello.token, self.token) else "bad token"
        connection.send(W.DirectResponse(rejected=W.DirectRejected(reason=W.DIRECT_REJECT_REASON_REFUSED, message=why)))
        return False

    def _handle(self, connection: _Connection, inp: worker_pb2.Input) -> None:
        if self.draining:
            connection.send(W.DirectResponse(rejected=W.DirectRejected(input_id=inp.input_id, reason=W.DIRECT_REJECT_REASON_DRAINING)))
            return
        if not self.gate.try_acquire():
            connection.send(W.DirectResponse(rejected=W.DirectRejected(input_id=inp.input_id, reason=W.DIRECT_REJECT_REASON_BUSY)))
            return
        self.running[inp.input_id] = RunningInput(inp.input_id, inp.method, time.monotonic() + self.timeout_s, connection)
        batcher = self.runner.batcher
        if batcher is not None:
            # The batcher's thread answers when the batch is done; this thread goes back to reading,
            # so a batch of N costs no N thread wake-ups.
            future = batcher.submit(inp)
            future.add_done_callback(lambda done: self._finish(connection, inp.input_id, done.result()))
            return
        try:
            result = self.runner.run_in_thread(inp)
        except BaseException:
            self._release(inp.input_id)
            raise
        self._finish(connection, inp.input_id, result)

    def _release(self, input_id: str) -> None:
        self.gate.release()
        self.running.pop(input_id, None)
        with self._lock:  # `+=` from many threads could lose counts
            self.served += 1

    def _finish(self, connection: _Connection, input_id: str, result: common_pb2.Result) -> None:
        self._release(input_id)
        try:
            connection.send(W.DirectResponse(output=W.Output(input_id=input_id, result=result)), input_id)
        except OSError:
            pass  # the caller went away; its connection thread notices and closes
