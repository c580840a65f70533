"""The connection to a Corral server: channels, credentials, and error translation."""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from corral import _context, exception
from corral._direct import EXIT_WAIT_S, DirectPath
from corral._home import corral_home, read_server_record, read_token
from corral_protocol import AUTHORIZATION_METADATA_KEY, PROTOCOL_VERSION, VERSION_METADATA_KEY, env, payloads, transport
from corral_protocol.errors import error_reason
from corral_protocol.v1 import common_pb2, control_pb2, control_pb2_grpc

T = TypeVar("T")

# Messages up to one payload at the limit (corral_protocol.payloads) plus its envelope.
CHANNEL_OPTIONS = [
    *payloads.grpc_message_options(),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def target_of(url: str) -> tuple[str, bool]:
    """`grpc://host:port` (or a bare `host:port`) is plaintext; `grpcs://host:port` is TLS."""
    try:
        address = transport.server_address(url)
    except transport.TransportError as err:
        raise exception.InvalidError(str(err)) from None
    return address.target, address.tls


def translate_rpc_error(err: grpc.RpcError, url: str) -> exception.Error:
    code = err.code() if hasattr(err, "code") else None
    details = err.details() if hasattr(err, "details") else str(err)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return exception.AuthError(f"the Corral server at {url} refused the token: {details}")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return exception.VersionMismatchError(details or "incompatible protocol version")
    if code == grpc.StatusCode.NOT_FOUND:
        trailers = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
        if error_reason(trailers) == common_pb2.ERROR_REASON_SERVICE_GONE:
            return exception.ServiceGoneError(details)
        return exception.NotFoundError(details)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return exception.InvalidError(details)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return exception.QueueFullError(details)
    if code == grpc.StatusCode.UNAVAILABLE:
        return exception.ConnectionError(f"cannot reach the Corral server at {url}: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return exception.TimeoutError(f"the Corral server at {url} did not answer in time")
    if code == grpc.StatusCode.CANCELLED:
        return exception.InputCancellation(details or "the call was cancelled")
    return exception.Error(f"Corral server error ({code.name if code else 'unknown'}): {details}")


def _channel_credentials(ca: str | None) -> grpc.ChannelCredentials:
    try:
        return transport.channel_credentials(transport.trusted_roots(ca))
    except transport.TransportError as err:
        raise exception.InvalidError(f"{err} ({env.CORRAL_TLS_CA})") from None


class Client:
    """A connection to one Corral server.

    Example:
        client = corral.Client("grpc://10.0.0.5:7470", token="...")
        Model = corral.Cls.from_name("my-app", "Model", client=client)
    """

    def __init__(self, url: str, token: str, ca: str | None = None) -> None:
        """`ca`: a PEM file of the certificate(s) to trust for a `grpcs://` URL (default:
        `CORRAL_TLS_CA`, else the PEM text of `CORRAL_TLS_CA_PEM`, else the system's roots)."""
        self.url = url
        self._target, self._tls = target_of(url)
        self._credentials = _channel_credentials(ca) if self._tls else None
        self.metadata: tuple[tuple[str, str], ...] = (
            (AUTHORIZATION_METADATA_KEY, f"Bearer {token}"),
            (VERSION_METADATA_KEY, str(PROTOCOL_VERSION)),
        )
        if self._credentials is not None:
            self._channel = grpc.secure_channel(self._target, self._credentials, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(self._target, options=CHANNEL_OPTIONS)
        self.stub = control_pb2_grpc.ControlServiceStub(self._channel)
        self._aio: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, control_pb2_grpc.ControlServiceStub] = (
            weakref.WeakKeyDictionary()
        )
        self._embedded: EmbeddedCluster | None = None
        self._direct: DirectPath | None = None

    @property
    def direct(self) -> DirectPath:
        """The direct call path to this server's containers (made on first use)."""
        if self._direct is None:
            self._direct = DirectPath(self._get_routes, self._get_routes_aio, self._container_exit, self._container_exit_aio)
        return self._direct

    def call(self, rpc: Callable[..., T], request: Any, timeout: float | None = None) -> T:
        """Make a unary call on the sync stub, turning gRPC errors into Corral errors."""
        try:
            return rpc(request, metadata=self.metadata, timeout=timeout)
        except grpc.RpcError as err:
            raise translate_rpc_error(err, self.url) from None

    def aio_stub(self) -> control_pb2_grpc.ControlServiceStub:
        """A stub on an asyncio channel bound to the running event loop."""
        loop = asyncio.get_running_loop()
        stub = self._aio.get(loop)
        if stub is None:
            if self._credentials is not None:
                channel = grpc.aio.secure_channel(self._target, self._credentials, options=CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.insecure_channel(self._target, options=CHANNEL_OPTIONS)
            stub = control_pb2_grpc.ControlServiceStub(channel)
            self._aio[loop] = stub
        return stub

    async def call_aio(self, rpc_name: str, request: Any, timeout: float | None = None) -> Any:
        rpc = getattr(self.aio_stub(), rpc_name)
        try:
            return await rpc(request, metadata=self.metadata, timeout=timeout)
        except grpc.RpcError as err:
            raise translate_rpc_error(err, self.url) from None

    def _get_routes(self, service_id: str) -> control_pb2.GetRoutesResponse:
        return self.call(self.stub.GetRoutes, control_pb2.GetRoutesRequest(service_id=service_id), timeout=10)

    async def _get_routes_aio(self, service_id: str) -> control_pb2.GetRoutesResponse:
        response: control_pb2.GetRoutesResponse = await self.call_aio(
            "GetRoutes", control_pb2.GetRoutesRequest(service_id=service_id), timeout=10,
        )
        return response

    def _container_exit(self, service_id: str, container_id: str, method: str) -> str:
        request = control_pb2.GetContainerExitRequest(container_id=container_id, service_id=service_id, method=method, timeout_s=EXIT_WAIT_S)
        response = self.call(self.stub.GetContainerExit, request, timeout=EXIT_WAIT_S + 5)
        return response.message if response.exited else ""

    async def _container_exit_aio(self, service_id: str, container_id: str, method: str) -> str:
        request = control_pb2.GetContainerExitRequest(container_id=container_id, service_id=service_id, method=method, timeout_s=EXIT_WAIT_S)
        response: control_pb2.GetContainerExitResponse = await self.call_aio("GetContainerExit", request, timeout=EXIT_WAIT_S + 5)
        return response.message if response.exited else ""

    @property
    def is_embedded(self) -> bool:
        """True when this client started its own background cluster (no server was configured)."""
        return self._embedded is not None

    def close(self) -> None:
        self._channel.close()
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None

    @classmethod
    def from_env(cls) -> Client:
        """Find the server: `CORRAL_SERVER_URL` + `CORRAL_TOKEN`; else a `corral up` running for
        `CORRAL_HOME`; else start an embedded cluster in the background for this program's life."""
        url = os.environ.get(env.CORRAL_SERVER_URL)
        home = corral_home()
        if url:
            token = os.environ.get(env.CORRAL_TOKEN) or read_token(home)
            if not token:
                raise exception.AuthError(f"{env.CORRAL_SERVER_URL} is set but {env.CORRAL_TOKEN} is not")
            return cls(url, token)
        record = read_server_record(home)
        token = read_token(home)
        if record is not None and record.is_alive() and token:
            return cls(record.url, token, record.ca or None)
        in_container = env.CORRAL_CONTAINER_ID in os.environ
        if in_container and _context.serving() and os.environ.get(env.CORRAL_CONTROL_URL) and os.environ.get(env.CORRAL_CONTAINER_TOKEN):
            # Calls from a container's code: the container's own token, which may only look up,
            # bind, invoke, get results and cancel, and dies with the container.
            return cls(os.environ[env.CORRAL_CONTROL_URL], os.environ[env.CORRAL_CONTAINER_TOKEN])
        if in_container:
            # Inside a container, a call with no server configured is almost always module-level code
            # (`with app.run():` outside `if __name__ == "__main__":`) running again on import. Starting
            # a cluster here would start containers that import the module again, without end.
            raise exception.InvalidError(
                "code running inside a Corral container tried to connect to a Corral server, but containers have "
                "no server configured. This usually means the module runs `app.run()` or calls `.remote()` at import "
                "time: move that code under `if __name__ == \"__main__\":` or into an @app.local_entrypoint()"
            )
        embedded = EmbeddedCluster.start(home)
        client = cls(embedded.url, embedded.token)
        client._embedded = embedded
        return client


class EmbeddedCluster:
    """A control plane and one runtime node in a background process, for this program's life.

    The child watches its stdin: when this process exits, the pipe closes and the child shuts down
    gracefully (exit hooks run).
    """

    def __init__(self, process: subprocess.Popen[bytes], url: str, token: str) -> None:
        self.process = process
        self.url = url
        self.token = token

    @classmethod
    def start(cls, home: Any) -> EmbeddedCluster:
        try:
            import corral_runtime  # noqa: F401
            import corral_scheduler  # noqa: F401
        except ImportError:
            raise exception.ConnectionError(
                f"no Corral server is configured ({env.CORRAL_SERVER_URL}) or running (`corral up`), and the embedded "
                "cluster is not installed: pip install 'corral[local]'"
            ) from None
        process = subprocess.Popen(
            [sys.executable, "-m", "corral._embedded", "--background", "--home", str(home)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            code = process.wait()
            raise exception.ConnectionError(f"the embedded Corral cluster failed to start (exit code {code}); see its output above")
        info = json.loads(line)
        cluster = cls(process, info["url"], info["token"])
        atexit.register(cluster.stop)
        return cluster

    def stop(self, timeout: float = 60.0) -> None:
        if self.process.poll() is not None:
            return
        try:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, OSError):
            self.process.kill()
            self.process.wait()


_default_lock = threading.Lock()
_default_client: Client | None = None


def default_client() -> Client:
    """The client from the environment, made once per process on first use."""
    global _default_client
    with _default_lock:
        if _default_client is None:
            _default_client = Client.from_env()
        return _default_client
