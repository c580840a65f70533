"""The HTTP gateway for web endpoints: uvicorn serving an ASGI app in the control plane's own event loop.

A request is resolved to a route (`web_routes`), checked (method, proxy token, body size, class
parameters from the query string), and enqueued with `ControlPlane.invoke` as an input carrying
the HTTP request, so web traffic shares the queues, slots, batching and autoscaler of `.remote()`
calls. The container answers with a streamed response (HttpResponseStart, HttpBodyChunks), which
passes through as it arrives.

Slow or endless clients are bounded (docs/reliability.md): a request's line and headers must arrive
within `HEADER_TIMEOUT_S` (at most `MAX_HEADER_BYTES`), its body may not stall for more than
`BODY_IDLE_TIMEOUT_S` (408, then the connection closes), an idle keep-alive connection closes after
`KEEP_ALIVE_TIMEOUT_S`, and past `MAX_CONNECTIONS` open connections new requests are answered 503.
A JSON body nested deeper than `corral_protocol.web.MAX_JSON_DEPTH` is a 400 here, before it reaches
a container.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import h11
import uvicorn
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from uvicorn.protocols.http.h11_impl import H11Protocol

from corral_protocol.parameters import parse_parameter
from corral_protocol.v1 import common_pb2, control_pb2, worker_pb2
from corral_protocol.web import MAX_JSON_DEPTH, json_depth_exceeds
from corral_scheduler import http_invoke
from corral_scheduler.control_plane import ControlPlane
from corral_scheduler.errors import ApiError, InvalidArgument, NotFound, QueueFull
from corral_scheduler.tls import TlsFiles
from corral_scheduler.web_docs import openapi_document, swagger_ui_html
from corral_scheduler.web_routes import RouteTable, WebRoute

log = logging.getLogger("corral.gateway")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

DEFAULT_HTTP_PORT = 7471
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
# Past the limit the body is still read (and dropped) up to this much more, so that the client
# reads a clean 413 instead of a reset connection; beyond it the connection is cut.
_DRAIN_BYTES = 64 * 1024 * 1024
HEADER_TIMEOUT_S = 10.0
BODY_IDLE_TIMEOUT_S = 10.0
KEEP_ALIVE_TIMEOUT_S = 5
MAX_CONNECTIONS = 1024
MAX_HEADER_BYTES = 16 * 1024
# Bodies larger than this are checked for JSON depth on a thread (the scan is linear but in Python).
_DEPTH_CHECK_INLINE_BYTES = 256 * 1024
KEY_HEADER = http_invoke.KEY_HEADER
SECRET_HEADER = http_invoke.SECRET_HEADER
_HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade"}
_EMPTY_ARGS = common_pb2.Payload(format=common_pb2.PAYLOAD_FORMAT_JSON, data=b"{}")
S = common_pb2
DOCS_PATH = "/docs"
OPENAPI_PATH = "/openapi.json"


class _ClientGone(Exception):
    """The client disconnected while its request was being read."""


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def response(self, extra: dict[str, Any] | None = None) -> JSONResponse:
        return JSONResponse({"error": self.message, **(extra or {})}, status_code=self.status, headers=self.headers)


def parameter_values(class_def: common_pb2.ClassDef, query: list[tuple[str, str]]) -> list[common_pb2.NamedParameter]:
    """The class parameters given in the query string, typed by the class's parameter schema."""
    given = dict(query)
    values = []
    for spec in class_def.parameters:
        if spec.name not in given:
            continue
        try:
            value = parse_parameter(spec.type, given[spec.name])
        except ValueError as err:
            raise HttpError(400, f"parameter {spec.name!r} {err}") from None
        values.append(common_pb2.NamedParameter(name=spec.name, value=value))
    return values


class WebGateway:
    """The gateway's ASGI app."""

    def __init__(self, plane: ControlPlane, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.plane = plane
        self.max_body_bytes = max_body_bytes
        self.routes = RouteTable(plane.app_records())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1003})
            return
        try:
            await self._serve(Request(scope, receive), receive, send)
        except HttpError as err:
            await err.response()(scope, receive, send)
        except _ClientGone:
            return

    async def _serve(self, request: Request, receive: Receive, send: Send) -> None:
        path = request.scope["path"]
        if path.startswith(http_invoke.PREFIX):  # HTTP/JSON invocation of any method
            try:
                response = await http_invoke.answer(self.plane, request, lambda req: self._read_json_body(req, receive))
            except http_invoke.Refused as err:
                raise HttpError(err.status, err.message, err.headers) from None
            await response(request.scope, receive, send)
            return
        found = self.routes.resolve(path)
        if found is None:
            raise HttpError(404, f"no web endpoint at {path}")
        route, rest = found
        if not route.is_asgi and rest in (DOCS_PATH, OPENAPI_PATH) and route.endpoint.docs and route.endpoint.openapi_json:
            await self._docs(route, rest, request)(request.scope, receive, send)
            return
        if not route.is_asgi:
            if rest not in ("", "/"):
                raise HttpError(404, f"no web endpoint at {path} (the endpoint is {route.prefix})")
            if request.method != route.endpoint.http_method:
                raise HttpError(405, f"{route.prefix} accepts {route.endpoint.http_method}, not {request.method}",
                                {"allow": route.endpoint.http_method})
        if route.endpoint.requires_proxy_auth:
            self._check_proxy_auth(request)
        body = await (self._read_body(request, receive) if route.is_asgi and "json" not in request.headers.get("content-type", "")
                      else self._read_json_body(request, receive))
        query = parse_qsl(request.scope["query_string"].decode("latin-1"), keep_blank_values=True)
        http_request = worker_pb2.HttpRequest(
            method=request.method, path=route.prefix + "/" if route.is_asgi and not rest else path,
            query_string=request.scope["query_string"], body=body, root_path=route.prefix,
            client_host=request.client.host if request.client else "",
            headers=[
                worker_pb2.HttpHeader(name=name.decode("latin-1"), value=value)
                for name, value in request.scope["headers"] if name not in (KEY_HEADER.encode(), SECRET_HEADER.encode())
            ],
        )
        try:
            service_id = self.plane.bind_service(route.app_id, route.class_def.name, parameter_values(route.class_def, query),
                                                 common_pb2.ServiceOptions())
            inp = self.plane.invoke(service_id, route.method, _EMPTY_ARGS, http_request=http_request)
        except InvalidArgument as err:
            raise HttpError(400, err.message) from None
        except NotFound as err:
            raise HttpError(404, err.message) from None
        except QueueFull as err:
            raise HttpError(503, err.message, {"retry-after": "1"}) from None
        except ApiError as err:
            raise HttpError(500, err.message) from None
        await self._relay(route, inp.call_id, inp.future, inp.http_events, request, receive, send)

    def _docs(self, route: WebRoute, rest: str, request: Request) -> Response:
        """`<endpoint>/openapi.json` and `<endpoint>/docs` of a `docs=True` endpoint, from the description
        the SDK built at definition time: no container is asked."""
        if request.method not in ("GET", "HEAD"):
            raise HttpError(405, f"{route.prefix}{rest} accepts GET, not {request.method}", {"allow": "GET"})
        if route.endpoint.requires_proxy_auth:
            self._check_proxy_auth(request)
        if rest == OPENAPI_PATH:
            return Response(openapi_document(route), media_type="application/json")
        return HTMLResponse(swagger_ui_html(f"{route.class_def.name}.{route.method}", route.prefix + OPENAPI_PATH))

    def _check_proxy_auth(self, request: Request) -> None:
        key, secret = request.headers.get(KEY_HEADER, ""), request.headers.get(SECRET_HEADER, "")
        if not key or not secret or not self.plane.check_proxy_token(key, secret):
            raise HttpError(
                401, "this endpoint requires a proxy token: send the Corral-Key and Corral-Secret headers of a token "
                     "made with `corral token create`",
            )

    async def _read_json_body(self, request: Request, receive: Receive) -> bytes:
        """The body, refused with a 400 when it nests JSON deeper than MAX_JSON_DEPTH."""
        body = await self._read_body(request, receive)
        if body and await _too_deep(body):
            raise HttpError(400, f"the JSON body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep")
        return body

    async def _read_body(self, request: Request, receive: Receive) -> bytes:
        limit = self.max_body_bytes
        declared = request.headers.get("content-length", "")
        too_large = declared.isdigit() and int(declared) > limit + _DRAIN_BYTES
        if too_large:
            raise HttpError(413, f"the request body is larger than the limit of {limit} bytes")
        body = bytearray()
        size = 0
        more = True
        while more:
            try:
                message = await asyncio.wait_for(receive(), BODY_IDLE_TIMEOUT_S)
            except asyncio.TimeoutError:
                got = f"{size} of {declared} bytes" if declared else f"{size} bytes"
                raise HttpError(408, f"the request body stalled: no data for {BODY_IDLE_TIMEOUT_S:g} s after {got}",
                                {"connection": "close"}) from None
            if message["type"] == "http.disconnect":
                raise _ClientGone()
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            size += len(chunk)
            if size > limit + _DRAIN_BYTES:
                break
            if size <= limit:
                body += chunk
        if size > limit:
            raise HttpError(413, f"the request body is larger than the limit of {limit} bytes")
        return bytes(body)

    async def _relay(self, route: WebRoute, call_id: str, future: asyncio.Future[common_pb2.Result],
                     events: asyncio.Queue[Any] | None, request: Request, receive: Receive, send: Send) -> None:
        """Pass the container's response through as it streams in; cancel the input if the client leaves."""
        assert events is not None
        future.add_done_callback(lambda _: events.put_nowait(None))

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self.plane.cancel(call_id, "the HTTP client went away")

        watcher = asyncio.create_task(watch_disconnect())
        started = False
        try:
            while True:
                event = await events.get()
                if isinstance(event, worker_pb2.HttpResponseStart):
                    if started:  # a retry after the response began: the client keeps what it got
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                        return
                    started = True
                    headers = [(h.name.lower().encode("latin-1"), h.value) for h in event.headers]
                    await send({"type": "http.response.start", "status": event.status,
                                "headers": [h for h in headers if h[0] not in _HOP_BY_HOP]})
                elif isinstance(event, worker_pb2.HttpBodyChunk):
                    if started:
                        await send({"type": "http.response.body", "body": event.data, "more_body": event.more_body})
                    if not event.more_body:
                        return
                else:  # the input finished without a (complete) response
                    if started:
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                    else:
                        await self._failure(route, future.result()).__call__(request.scope, receive, send)
                    return
        finally:
            watcher.cancel()
            if not future.done():
                self.plane.cancel(call_id, "the HTTP request ended")
            self.plane.forget(call_id)

    def _failure(self, route: WebRoute, result: common_pb2.Result) -> JSONResponse:
        status = {
            S.RESULT_STATUS_TIMEOUT: 504,
            S.RESULT_STATUS_CANCELLED: 503,
        }.get(result.status, 500)
        message = result.message or "the endpoint failed without a response"
        extra: dict[str, Any] = {}
        app = self.plane.app_records().get(route.app_id)
        if result.traceback and app is not None and app.kind == control_pb2.APP_KIND_EPHEMERAL:
            extra["traceback"] = result.traceback  # dev mode (`corral run`, `app.run()`)
        return HttpError(status, message).response(extra)


async def _too_deep(body: bytes) -> bool:
    if len(body) <= _DEPTH_CHECK_INLINE_BYTES:
        return json_depth_exceeds(body)
    return await asyncio.to_thread(json_depth_exceeds, body)


class _TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's line and headers.

    uvicorn bounds only the idle time between requests (`timeout_keep_alive`); a client that
    dribbles its headers would hold the connection forever. The deadline starts when the
    connection opens and again when a response completes; if the request's head has not been read
    whole by then (h11 still waits for it), the connection is closed."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._head_timeout)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport is not None and not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self.transport.close()


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the control plane's loop: the host process owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


class HttpGateway:
    """The running gateway: its URL, and how to stop it."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], url: str) -> None:
        self._server = server
        self._task = task
        self.url = url

    async def stop(self) -> None:
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self._task, timeout=5)


async def start_gateway(
    plane: ControlPlane, host: str, port: int, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, tls: TlsFiles | None = None,
) -> HttpGateway:
    """Serve web endpoints on host:port (0 picks a free port) and record the URL on the plane; HTTPS with `tls`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say so. Without it a response's
    # body write waits for the client's delayed ACK (~40 ms on every keep-alive request).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(f"the web gateway cannot listen on {host}:{port} ({err.strerror}); pick another with --http-port") from None
    sock.listen(1024)
    sock.setblocking(False)
    config = uvicorn.Config(
        WebGateway(plane, max_body_bytes), lifespan="off", log_level="warning", access_log=False, timeout_graceful_shutdown=2,
        http=_TimedH11Protocol, timeout_keep_alive=KEEP_ALIVE_TIMEOUT_S, limit_concurrency=MAX_CONNECTIONS,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        ssl_certfile=str(tls.cert) if tls is not None else None, ssl_keyfile=str(tls.key) if tls is not None else None,
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="corral-web-gateway")
    while not server.started:
        if task.done():
            task.result()
            raise OSError("the web gateway stopped while starting")
        await asyncio.sleep(0.01)
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = f"{'https' if tls is not None else 'http'}://{connect_host}:{sock.getsockname()[1]}"
    plane.http_url = url
    return HttpGateway(server, task, url)
