"""Bearer tokens and the protocol-version check, applied to every RPC by a server interceptor."""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from corral_protocol import AUTHORIZATION_METADATA_KEY, PROTOCOL_VERSION, VERSION_METADATA_KEY
from corral_scheduler.join_tokens import JoinTokenBook, looks_like_join_token

WORKER_SERVICE_PREFIX = "/corral.v1.WorkerService/"
NODE_SERVICE_PREFIX = "/corral.v1.NodeService/"
CONTROL_SERVICE_PREFIX = "/corral.v1.ControlService/"
CONTAINER_CALLS = frozenset(
    f"{CONTROL_SERVICE_PREFIX}{name}"
    for name in ("LookupClass", "BindService", "Invoke", "InvokeStream", "GetResult", "CancelCall", "GetRoutes", "GetContainerExit")
)
"""What code inside a container may do with its container's token: look up, bind, invoke (and
stream), get results, cancel, find direct routes and ask why a routed container ended. Never deploy, stop, secrets or tokens. The
token dies with the container."""


def new_token() -> str:
    return secrets.token_urlsafe(32)


def load_or_create_token(path: Path) -> str:
    """The admin token in `path`, generated on first use and stored with mode 0600."""
    try:
        token = path.read_text().strip()
        if token:
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)  # a hand-written token file stays readable by its owner only
            return token
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = new_token()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return token


def bearer_token(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == AUTHORIZATION_METADATA_KEY and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer "):]
    return ""


def _abort_handler(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def abort(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def abort_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover

    kwargs = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort_stream, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort_stream, **kwargs)
    return grpc.unary_unary_rpc_method_handler(abort, **kwargs)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls with a missing or incompatible protocol version (FAILED_PRECONDITION) and calls
    without a valid token (UNAUTHENTICATED). Container tokens are only good for the WorkerService;
    the handler there checks that the token belongs to the container it speaks for. Join tokens
    (`join_tokens`) are only good for the NodeService: anything else is PERMISSION_DENIED."""

    def __init__(self, admin_token: str, is_container_token: Callable[[str], bool], join_tokens: JoinTokenBook | None = None) -> None:
        self._admin_token = admin_token
        self._is_container_token = is_container_token
        self._join_tokens = join_tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None:
            return handler
        metadata = details.invocation_metadata
        version = next((v for k, v in metadata or () if k == VERSION_METADATA_KEY), None)
        if version != str(PROTOCOL_VERSION):
            told = f"protocol version {version!s}" if version else "no protocol version"
            return _abort_handler(
                handler,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"incompatible client: it sent {told}, this Corral server speaks protocol version {PROTOCOL_VERSION}; "
                "install a corral client of the same major version as the server",
            )
        token = bearer_token(metadata)
        if details.method.startswith(WORKER_SERVICE_PREFIX):
            ok = bool(token) and self._is_container_token(token)
        else:
            ok = bool(token) and hmac.compare_digest(token.encode(), self._admin_token.encode())
            if not ok and token and details.method.startswith(CONTROL_SERVICE_PREFIX) and self._is_container_token(token):
                if details.method not in CONTAINER_CALLS:
                    return _abort_handler(
                        handler, grpc.StatusCode.PERMISSION_DENIED,
                        "code inside a container may only look up, bind, invoke, get results and cancel calls",
                    )
                ok = True
            if not ok and self._join_tokens is not None and looks_like_join_token(token):
                problem = self._join_tokens.check(token)
                if details.method.startswith(NODE_SERVICE_PREFIX):
                    if problem is not None:
                        return _abort_handler(handler, grpc.StatusCode.UNAUTHENTICATED, f"invalid join token: {problem}")
                    ok = True
                elif problem is None:
                    return _abort_handler(
                        handler, grpc.StatusCode.PERMISSION_DENIED,
                        f"a join token only lets a machine join as a node (corral.v1.NodeService); {details.method} "
                        "needs the admin token",
                    )
        if not ok:
            return _abort_handler(handler, grpc.StatusCode.UNAUTHENTICATED, "invalid or missing bearer token")
        return handler
