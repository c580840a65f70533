"""HTTP inputs in the container: the gateway forwards the request as it came, and this module turns
it into a response.

Function endpoints: the query string (GET) or the JSON body (other methods) becomes keyword
arguments, checked against the method's signature (a problem is a 400 naming it), the call runs
through the same `InputRunner` as `.remote()` calls (slots and batching included), and the value
is answered as JSON (pydantic models via `model_dump(mode="json")`). A user exception is a 500 with
a short message; its traceback is included only for ephemeral apps (dev mode).
ASGI apps: see `asgi.py`.
"""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import json
import sys
import traceback
import types
import typing
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from corral import container_api as sdk
from corral_protocol.parameters import parse_bool
from corral_protocol.v1 import worker_pb2
from corral_runtime import web_streams
from corral_runtime.asgi import AsgiApp, run_asgi
from corral_runtime.runner import InputRunner

SendMessage = Callable[[worker_pb2.WorkerSessionRequest], Awaitable[None]]
_JSON_HEADERS = [(b"content-type", b"application/json")]
# A response body travels to the gateway in chunks of at most this much, whatever size the app
# writes at once, so no single message nears the gRPC message limit.
BODY_CHUNK_BYTES = 1024 * 1024


class BadRequest(Exception):
    """The request does not fit the endpoint: answered 400 with this message."""


def to_json(value: Any) -> bytes:
    return json.dumps(value, default=_json_default, separators=(",", ":")).encode()


def _json_default(value: Any) -> Any:
    if hasattr(value, "model_dump"):  # pydantic v2
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _unwrap_optional(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:  # Optional[X], X | None
        return args[0]
    return annotation


def _from_query(name: str, raw: str, annotation: Any) -> Any:
    annotation = _unwrap_optional(annotation)
    try:
        if annotation is bool:
            return parse_bool(raw)
        if annotation in (int, float):
            return annotation(raw)
    except ValueError:
        raise BadRequest(f"argument {name!r} must be {annotation.__name__}, got {raw!r}") from None
    return raw


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and hasattr(annotation, "model_validate")


def _takes_whole_body(annotation: Any) -> bool:
    annotation = _unwrap_optional(annotation)
    return annotation is dict or typing.get_origin(annotation) is dict or _is_model(annotation)


class HttpInputs:
    def __init__(self, definition: sdk.ClassDefinition, runner: InputRunner, asgi_apps: dict[str, AsgiApp], dev_mode: bool) -> None:
        self.definition = definition
        self.runner = runner
        self.asgi_apps = asgi_apps
        self.dev_mode = dev_mode
        self._class_parameters = {p.name for p in definition.parameters}

    async def serve(self, inp: worker_pb2.Input, send: SendMessage) -> None:
        """Answer one HTTP input with HttpResponseStart and HttpBodyChunks."""

        async def start(status: int, headers: list[tuple[bytes, bytes]]) -> None:
            await send(worker_pb2.WorkerSessionRequest(http_response_start=worker_pb2.HttpResponseStart(
                input_id=inp.input_id, status=status,
                headers=[worker_pb2.HttpHeader(name=k.decode("latin-1"), value=v) for k, v in headers],
            )))

        async def body(data: bytes, more: bool) -> None:
            for start_at in range(0, max(len(data) - BODY_CHUNK_BYTES, 0), BODY_CHUNK_BYTES):
                chunk = data[start_at:start_at + BODY_CHUNK_BYTES]
                await send(worker_pb2.WorkerSessionRequest(http_body=worker_pb2.HttpBodyChunk(input_id=inp.input_id, data=chunk, more_body=True)))
            last = data[(max(len(data) - 1, 0) // BODY_CHUNK_BYTES) * BODY_CHUNK_BYTES:]
            await send(worker_pb2.WorkerSessionRequest(http_body=worker_pb2.HttpBodyChunk(input_id=inp.input_id, data=last, more_body=more)))

        async def respond(status: int, payload: Any) -> None:
            await start(status, _JSON_HEADERS)
            await body(to_json(payload), False)

        info = self.definition.methods.get(inp.method)
        if info is None or info.web_endpoint is None:
            await respond(404, {"error": f"{self.definition.name}.{inp.method} is not a web endpoint"})
            return
        served = self.asgi_apps.get(inp.method)
        if served is not None:
            try:
                await run_asgi(served.app, inp.http_request, start, body, served.lifespan.state)
            except Exception as exc:
                masked = self.runner.redactor
                await respond(500, self._error_body(type(exc).__name__, masked.text(str(exc)), masked.text(_format(exc))))
            return
        try:
            kwargs = self._arguments(info, inp.http_request)
        except BadRequest as err:
            await respond(400, {"error": str(err)})
            return
        call = worker_pb2.Input(input_id=inp.input_id, method=inp.method, args=sdk.encode_args((), kwargs))
        ok, value = await self.runner.call_raw(call)
        if not ok:
            name = value.exception_type.rsplit(".", 1)[-1] or "Error"
            await respond(500, self._error_body(name, value.message, value.traceback))
            return
        if web_streams.is_asgi_response(value):  # a StreamingResponse, or any Starlette response
            await run_asgi(value, inp.http_request, start, body)
            return
        if web_streams.is_generator(value):
            try:
                await web_streams.stream_generator(value, self.runner, start, body, to_json)
            except Exception as exc:
                self._error_body(type(exc).__name__, self.runner.redactor.text(str(exc)), "")
            return
        try:
            data = to_json(value)
        except Exception as exc:
            message = f"the return value of {self.definition.name}.{inp.method} could not be serialized as JSON: {exc}"
            await respond(500, self._error_body("TypeError", message, _format(exc)))
            return
        await start(200, _JSON_HEADERS)
        await body(data, False)

    def _error_body(self, exc_type: str, message: str, tb: str) -> dict[str, Any]:
        print(f"corral worker: web endpoint error: {exc_type}: {message}", file=sys.stderr)
        error: dict[str, Any] = {"error": f"{exc_type}: {message}" if message else exc_type}
        if self.dev_mode and tb:
            error["traceback"] = tb
        return error

    def _arguments(self, info: sdk.MethodInfo, request: worker_pb2.HttpRequest) -> dict[str, Any]:
        """The method's keyword arguments from the request, checked against its signature."""
        signature = inspect.signature(info.function)
        params = list(signature.parameters.values())[1:]  # after self
        try:
            hints = typing.get_type_hints(info.function)
        except Exception:
            hints = {}
        pairs = parse_qsl(request.query_string.decode("latin-1"), keep_blank_values=True)
        query: dict[str, Any] = {}
        for name, raw in pairs:
            if name in self._class_parameters:
                continue
            annotation = hints.get(name)
            if typing.get_origin(_unwrap_optional(annotation)) is list:
                item = (typing.get_args(_unwrap_optional(annotation)) or (str,))[0]
                query.setdefault(name, []).append(_from_query(name, raw, item))
            else:
                query[name] = _from_query(name, raw, annotation)
        if info.web_endpoint is not None and info.web_endpoint.http_method == "GET":
            kwargs = query
        else:
            try:
                payload = json.loads(request.body) if request.body.strip() else {}
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise BadRequest(f"malformed JSON body: {err}") from None
            except RecursionError:  # the gateway refuses deep bodies first; this covers other senders
                raise BadRequest("the JSON body nests too deeply") from None
            if len(params) == 1 and _takes_whole_body(hints.get(params[0].name)) and params[0].name not in query:
                if not isinstance(payload, dict):  # `data: dict` or a pydantic model: the body must be an object
                    raise BadRequest(f"argument {params[0].name!r} must be a JSON object, got {_json_type(payload)}")
                kwargs = {params[0].name: payload}
            elif isinstance(payload, dict):
                kwargs = {**query, **payload}
            else:
                raise BadRequest(f"the JSON body must be an object of keyword arguments, got {_json_type(payload)}")
        for name, value in kwargs.items():
            annotation = _unwrap_optional(hints.get(name))
            if _is_model(annotation) and isinstance(value, dict):
                try:
                    kwargs[name] = annotation.model_validate(value)
                except Exception as err:
                    raise BadRequest(f"argument {name!r} is not a valid {annotation.__name__}: {err}") from None
        try:
            signature.bind(None, **kwargs)
        except TypeError as err:
            raise BadRequest(f"{err} (calling {self.definition.name}.{info.name})") from None
        return kwargs


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (`array`, not `list`)."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
