"""The container's side of the direct call path.

Clients that hold a route (address + token, from the control plane's GetRoutes) connect here and
send inputs without passing through the control plane. Each connection has its own thread and
carries one input at a time, so a sync method runs on the thread that read its input and writes
its output: no thread hop on the hot path. Admission shares the container's `SlotGate` with the
pushed inputs; a full or draining container answers at once with `DirectRejected`, and the
client sends the input through the control plane's queue instead. Nothing is dropped.

The port is open to anyone who can reach the node, so everything before the token check is bounded:
the hello must arrive whole within `HELLO_TIMEOUT_S` and fit in `MAX_HELLO_BYTES` (a frame declaring
more is refused from its 4-byte header, before anything is allocated), at most
`MAX_UNAUTHENTICATED` connections wait for their hello, and at most `MAX_CONNECTIONS` are open at
all; a connection beyond either bound is closed at once. Clients ask for `DirectAccepted` before
they send an input (`DirectHello.want_accepted`), so such a close sends them to the queue, never
fails their call. Authenticated connections idle for `idle_timeout_s()` (CORRAL_DIRECT_IDLE_TIMEOUT_S) are closed; an input over
the payload limit is answered `DIRECT_REJECT_REASON_TOO_LARGE` without being run.
"""

from __future__ import annotations

import hmac
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

from corral_protocol import PROTOCOL_VERSION, payloads
from corral_protocol.framing import HEADER, HELLO_TIMEOUT_S, MAX_HELLO_BYTES, FrameError, encode, idle_timeout_s
from corral_protocol.v1 import common_pb2, worker_pb2
from corral_runtime import payload_blobs
from corral_runtime.runner import CallerGone, InputRunner
from corral_runtime.slots import SlotGate

MAX_CONNECTIONS = 512
MAX_UNAUTHENTICATED = 32
_REFUSAL_LOG_EVERY_S = 10.0
_DISCARD_CHUNK = 1024 * 1024
W = worker_pb2
_ANSWERED = W.DirectRequest()  # _next_request: a frame already answered (too large); read the next one


def _read_exactly(sock: socket.socket, n: int, deadline: float | None, what: str) -> bytes:
    """n bytes, each recv bounded by the time left before `deadline` (or by the socket's own timeout)."""
    data = bytearray()
    while len(data) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FrameError(f"{what} did not arrive within {HELLO_TIMEOUT_S:g} s")
            sock.settimeout(left)
        chunk = sock.recv(min(n - len(data), _DISCARD_CHUNK))
        if not chunk:
            raise FrameError("the connection closed mid-frame" if data else "the connection closed")
        data += chunk
    return bytes(data)


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
        # Inputs arrive here inline (the SDK sends a blob's input through the queue).
        self.max_payload_bytes = payloads.inline_limit()
        self.max_frame_bytes = payloads.message_limit()
        self.idle_timeout_s = idle_timeout_s()
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._unauthenticated = 0
        self.refused_connections = 0
        self._refusal_logged_at = float("-inf")
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
            with self._lock:
                full = len(self._connections) >= MAX_CONNECTIONS or self._unauthenticated >= MAX_UNAUTHENTICATED
                if not full:
                    self._unauthenticated += 1
                    connection = _Connection(sock)
                    self._connections.add(connection)
            if full:
                # Closed before its hello is answered: a client sends its input through the queue.
                sock.close()
                self._note_refusal()
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(connection,), name="corral-direct", daemon=True).start()

    def _note_refusal(self) -> None:
        self.refused_connections += 1
        now = time.monotonic()
        if now - self._refusal_logged_at >= _REFUSAL_LOG_EVERY_S:
            self._refusal_logged_at = now
            print(
                f"corral worker: direct port at its bound ({len(self._connections)} connections, {self._unauthenticated} "
                f"awaiting a hello); refused {self.refused_connections} so far (their callers use the queue)",
                file=sys.stderr,
            )

    def _serve(self, connection: _Connection) -> None:
        sock = connection.sock
        authenticated = False
        try:
            try:
                accepted = self._hello(connection)
            finally:
                with self._lock:
                    self._unauthenticated -= 1
            if not accepted:
                return
            authenticated = True
            sock.settimeout(self.idle_timeout_s)  # bounds every wait for the next frame, and every read inside one
            while True:
                request = self._next_request(connection)
                if request is None:
                    return
                if request is _ANSWERED:
                    continue
                if request.WhichOneof("message") != "input":
                    return
                self._handle(connection, request.input)
        except (OSError, FrameError, CallerGone):
            return
        except Exception as err:  # a malformed frame: drop this connection, keep serving others
            if authenticated:
                print(f"corral worker: closing a direct connection: {err}", file=sys.stderr)
        finally:
            with self._lock:
                self._connections.discard(connection)
            sock.close()

    def _next_request(self, connection: _Connection) -> worker_pb2.DirectRequest | None:
        """The next request, None at a clean close (or idle timeout). A frame over the payload limit is
        read and dropped, and answered TOO_LARGE: the caller gets InvalidError, the connection lives."""
        sock = connection.sock
        try:
            header = sock.recv(HEADER.size, socket.MSG_WAITALL)
        except TimeoutError:
            return None  # idle for idle_timeout_s
        if not header:
            return None
        if len(header) < HEADER.size:
            header += _read_exactly(sock, HEADER.size - len(header), None, "a frame")
        (length,) = HEADER.unpack(header)
        if length > self.max_frame_bytes:
            left = length
            while left:
                left -= len(_read_exactly(sock, min(left, _DISCARD_CHUNK), None, "a frame"))
            self._too_large(connection, "", length)
            return _ANSWERED
        request = W.DirectRequest.FromString(_read_exactly(sock, length, None, "a frame") if length else b"")
        if request.WhichOneof("message") == "input" and len(request.input.args.data) > self.max_payload_bytes:
            self._too_large(connection, request.input.input_id, len(request.input.args.data), request.input.method)
            return _ANSWERED
        return request

    def _too_large(self, connection: _Connection, input_id: str, size: int, method: str = "") -> None:
        what = f"the arguments of {method}" if method else "the input"
        message = payloads.too_large(what, size, self.max_payload_bytes)
        connection.send(W.DirectResponse(rejected=W.DirectRejected(input_id=input_id, reason=W.DIRECT_REJECT_REASON_TOO_LARGE, message=message)))

    def _hello(self, connection: _Connection) -> bool:
        """Read and check the hello: whole within HELLO_TIMEOUT_S, at most MAX_HELLO_BYTES."""
        sock = connection.sock
        deadline = time.monotonic() + HELLO_TIMEOUT_S
        try:
            header = _read_exactly(sock, HEADER.size, deadline, "the hello")
            (length,) = HEADER.unpack(header)
            if length > MAX_HELLO_BYTES:  # refused from the header alone: nothing of it is read or allocated
                return False
            request = W.DirectRequest.FromString(_read_exactly(sock, length, deadline, "the hello"))
        except (OSError, FrameError):
            return False
        except Exception:  # not a DirectRequest
            return False
        hello = request.hello if request.WhichOneof("message") == "hello" else None
        if hello is not None and hello.protocol_version == PROTOCOL_VERSION and hmac.compare_digest(hello.token, self.token):
            sock.settimeout(None)
            if hello.want_accepted:
                connection.send(W.DirectResponse(accepted=W.DirectAccepted()))
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
            if self.runner.is_generator(inp.method):
                result = self.runner.run_generator_in_thread(inp, lambda value: connection.send(
                    W.DirectResponse(generator_item=W.GeneratorItem(input_id=inp.input_id, value=value)), inp.input_id))
            else:
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
        result = payload_blobs.offload_result(input_id, result, for_direct_caller=True)  # a large one: the caller reads it from the control plane
        self._release(input_id)
        try:
            connection.send(W.DirectResponse(output=W.Output(input_id=input_id, result=result)), input_id)
        except OSError:
            pass  # the caller went away; its connection thread notices and closes
