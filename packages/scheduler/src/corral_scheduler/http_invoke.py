"""HTTP/JSON invocation on the gateway, for clients without gRPC (curl, browsers):

    POST /v1/apps/{app}/classes/{class}/methods/{method}?{class parameters}
    Authorization: Bearer <admin token>      (or the Corral-Key and Corral-Secret of a proxy token)
    {"args": [...], "kwargs": {...}}

The call is exactly `LookupClass` + `BindService` + `Invoke(wait=true)` with a JSON payload (the
same checks, conversions, queues and containers), and the answer is the `Result` rendered as JSON
(docs/protocol.md, "HTTP/JSON invocation"), with an HTTP status that follows the result's.
The `/v1/apps/` prefix is reserved: a web endpoint of an app named `v1` cannot use the label `apps`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, unquote

from starlette.requests import Request
from starlette.responses import JSONResponse

from corral_protocol import CALL_ID_METADATA_KEY
from corral_protocol.parameters import parse_parameter
from corral_protocol.v1 import common_pb2
from corral_scheduler.control_plane import ControlPlane
from corral_scheduler.errors import ApiError, InvalidArgument, NotFound, QueueFull

PREFIX = "/v1/apps/"
# The proxy token's headers, as the gateway's web endpoints read them.
KEY_HEADER = "corral-key"
SECRET_HEADER = "corral-secret"
S = common_pb2
_HTTP_STATUS = {
    S.RESULT_STATUS_SUCCESS: 200,
    S.RESULT_STATUS_INVALID_ARGUMENT: 400,
    S.RESULT_STATUS_USER_ERROR: 500,
    S.RESULT_STATUS_INIT_ERROR: 500,
    S.RESULT_STATUS_INTERNAL_ERROR: 502,
    S.RESULT_STATUS_CANCELLED: 503,
    S.RESULT_STATUS_TIMEOUT: 504,
}


def parse_path(path: str) -> tuple[str, str, str] | None:
    """(app, class, method) of `/v1/apps/{app}/classes/{class}/methods/{method}`, or None."""
    parts = path[len(PREFIX):].split("/") if path.startswith(PREFIX) else []
    if len(parts) != 5 or parts[1] != "classes" or parts[3] != "methods" or not all(parts[i] for i in (0, 2, 4)):
        return None
    return unquote(parts[0]), unquote(parts[2]), unquote(parts[4])


def result_json(call_id: str, result: common_pb2.Result) -> dict[str, Any]:
    """A Result as JSON: `status` (the ResultStatus name), and `value`, or `exception` and `message`."""
    body: dict[str, Any] = {"call_id": call_id, "status": S.ResultStatus.Name(result.status)}
    if result.status == S.RESULT_STATUS_SUCCESS:
        body["value"] = json.loads(result.value.data or b"null")
        return body
    body["message"] = result.message
    if result.exception.format == S.PAYLOAD_FORMAT_JSON:
        body["exception"] = json.loads(result.exception.data)
    if result.traceback:
        body["traceback"] = result.traceback
    return body


class Refused(Exception):
    """The request was refused before a call existed: answered with `status` and {"error": message}."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


async def answer(plane: ControlPlane, request: Request, read_body: Callable[[Request], Awaitable[bytes]]) -> JSONResponse:
    """Answer one HTTP/JSON invocation (raises Refused)."""
    found = parse_path(request.scope["path"])
    if found is None:
        raise Refused(404, "use POST /v1/apps/{app}/classes/{class}/methods/{method}")
    if request.method != "POST":
        raise Refused(405, f"{request.scope['path']} accepts POST, not {request.method}", {"allow": "POST"})
    _check_auth(plane, request)
    app, class_name, method = found
    args = common_pb2.Payload(format=S.PAYLOAD_FORMAT_JSON, data=await read_body(request))
    try:
        app_id, class_def = plane.lookup_class(app, class_name)
        query = parse_qsl(request.scope["query_string"].decode("latin-1"), keep_blank_values=True)
        service_id = plane.bind_service(app_id, class_name, _parameters(class_def, query), common_pb2.ServiceOptions())
        call = plane.invoke(service_id, method, args)
    except InvalidArgument as err:
        raise Refused(400, err.message) from None
    except NotFound as err:
        raise Refused(404, err.message) from None
    except QueueFull as err:
        raise Refused(503, err.message, {"retry-after": "1"}) from None
    except ApiError as err:
        raise Refused(500, err.message) from None
    try:
        result = await asyncio.shield(call.future)
    except asyncio.CancelledError:  # the HTTP client went away
        plane.cancel(call.call_id, "the HTTP client went away")
        plane.forget(call.call_id)
        raise
    plane.forget(call.call_id)
    return JSONResponse(result_json(call.call_id, result), status_code=_HTTP_STATUS.get(result.status, 500),
                        headers={CALL_ID_METADATA_KEY: call.call_id})


def _parameters(class_def: common_pb2.ClassDef, query: list[tuple[str, str]]) -> list[common_pb2.NamedParameter]:
    """Class parameters from the query string, typed by the class's schema; any other name is refused."""
    specs = {spec.name: spec for spec in class_def.parameters}
    values = []
    for name, raw in query:
        spec = specs.get(name)
        if spec is None:
            raise Refused(400, f"{class_def.name} has no parameter {name!r} (parameters: {', '.join(specs) or 'none'})")
        try:
            values.append(common_pb2.NamedParameter(name=name, value=parse_parameter(spec.type, raw)))
        except ValueError as err:
            raise Refused(400, f"parameter {name!r} {err}") from None
    return values


def _check_auth(plane: ControlPlane, request: Request) -> None:
    authorization = request.headers.get("authorization", "")
    if authorization.startswith("Bearer "):
        if hmac.compare_digest(authorization[len("Bearer "):].encode(), plane.admin_token.encode()):
            return
    else:
        key, secret = request.headers.get(KEY_HEADER, ""), request.headers.get(SECRET_HEADER, "")
        if key and secret and plane.check_proxy_token(key, secret):
            return
    raise Refused(401, "send the admin token (Authorization: Bearer ...) or a proxy token (Corral-Key and Corral-Secret)",
                  {"www-authenticate": "Bearer"})
