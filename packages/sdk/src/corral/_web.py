"""Web endpoint decorators: `web_endpoint` (alias `fastapi_endpoint`) and `asgi_app`.

They record a `WebEndpoint` on the method; the control plane's HTTP gateway serves it. Misuse is
refused at decoration time, or when `@app.cls` sees the whole class.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from corral._partial import PartialFunction, Role, _as_partial, params_after_self
from corral.exception import InvalidError
from corral_protocol.names import NAME_RULE, is_valid_name
from corral_protocol.v1 import common_pb2
from corral_protocol.web import web_label

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
FUNCTION = common_pb2.WEB_ENDPOINT_KIND_FUNCTION
ASGI_APP = common_pb2.WEB_ENDPOINT_KIND_ASGI_APP


def _check_label(label: str | None, decorator: str) -> str:
    if label is None:
        return ""
    if not is_valid_name(label):
        raise InvalidError(f"@corral.{decorator}(label={label!r}): a label must be {NAME_RULE}")
    return label


def _mark(partial: PartialFunction, endpoint: common_pb2.WebEndpoint, decorator: str) -> PartialFunction:
    name = partial.raw_f.__qualname__
    if "web_endpoint" in partial.options:
        raise InvalidError(f"{name} has two web decorators; use one of @corral.web_endpoint or @corral.asgi_app")
    if partial.role & (Role.ENTER | Role.EXIT):
        raise InvalidError(f"{name} cannot be both a lifecycle hook and a web endpoint")
    options = {**partial.options, "web_endpoint": endpoint}
    # Like @corral.batched, the decorator makes the function a method; @corral.method() may be stacked on it.
    return replace(partial, role=partial.role | Role.METHOD, options=options)


def web_endpoint(
    _warn_parentheses_missing: Any = None,
    *,
    method: str = "GET",
    label: str | None = None,
    docs: bool = False,
    requires_proxy_auth: bool = False,
) -> Callable[[Any], PartialFunction]:
    """Expose a method over HTTP, at http://GATEWAY/<app>/<label> (label default: `Class-method`).

    GET takes the method's arguments from the query string (typed by their annotations); POST, PUT,
    PATCH and DELETE take a JSON object as keyword arguments, or the whole JSON body as the single
    argument of a method that takes one `dict` (or one pydantic model). A parameterized class takes
    its parameter values from the query string too. The return value is answered as JSON (pydantic
    models included). With `requires_proxy_auth=True`, callers send the `Corral-Key` and
    `Corral-Secret` headers of a token from `corral token create`.

    Example:
        @app.cls()
        class API:
            @corral.method()
            @corral.web_endpoint()
            def health(self):
                return {"status": "healthy"}

            @corral.method()
            @corral.web_endpoint(method="POST")
            def process(self, data: dict):
                return {"result": data}
    """
    if _warn_parentheses_missing is not None:
        raise InvalidError("use @corral.web_endpoint() with parentheses")
    if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
        raise InvalidError(f"@corral.web_endpoint(method={method!r}): the method must be one of {', '.join(HTTP_METHODS)}")
    endpoint = common_pb2.WebEndpoint(
        kind=FUNCTION, http_method=method.upper(), label=_check_label(label, "web_endpoint"),
        docs=bool(docs), requires_proxy_auth=bool(requires_proxy_auth),
    )

    def wrap(f: Any) -> PartialFunction:
        # A generator endpoint streams its items to the HTTP client (corral_runtime.web_streams).
        partial = _as_partial(f, "web_endpoint")
        return _mark(partial, endpoint, "web_endpoint")

    return wrap


def fastapi_endpoint(
    _warn_parentheses_missing: Any = None,
    *,
    method: str = "GET",
    label: str | None = None,
    docs: bool = False,
    requires_proxy_auth: bool = False,
) -> Callable[[Any], PartialFunction]:
    """Modal's current name for `web_endpoint`; the two are the same.

    Example:
        @corral.fastapi_endpoint(method="POST")
        def predict(self, data: dict): ...
    """
    if _warn_parentheses_missing is not None:
        raise InvalidError("use @corral.fastapi_endpoint() with parentheses")
    return web_endpoint(method=method, label=label, docs=docs, requires_proxy_auth=requires_proxy_auth)


def asgi_app(
    _warn_parentheses_missing: Any = None,
    *,
    label: str | None = None,
    requires_proxy_auth: bool = False,
) -> Callable[[Any], PartialFunction]:
    """Serve the ASGI app (FastAPI, Starlette, ...) this method returns under the class's URL prefix,
    http://GATEWAY/<app>/<label>/... (label default: the class name). The container builds the app
    once, after the @enter hooks, and runs every request through it; streamed responses stream.

    Example:
        @app.cls()
        class Web:
            @corral.enter()
            def load(self):
                self.greeting = "hello"

            @corral.asgi_app()
            def web(self):
                api = fastapi.FastAPI()

                @api.get("/greet/{name}")
                def greet(name: str):
                    return {"message": f"{self.greeting} {name}"}

                return api
    """
    if _warn_parentheses_missing is not None:
        raise InvalidError("use @corral.asgi_app() with parentheses")
    endpoint = common_pb2.WebEndpoint(
        kind=ASGI_APP, label=_check_label(label, "asgi_app"), requires_proxy_auth=bool(requires_proxy_auth),
    )

    def wrap(f: Any) -> PartialFunction:
        partial = _as_partial(f, "asgi_app")
        if params_after_self(partial.raw_f):
            raise InvalidError(f"@corral.asgi_app() method {partial.raw_f.__qualname__} must take only `self` and return the app")
        if "batching" in partial.options:
            raise InvalidError(f"{partial.raw_f.__qualname__} cannot be both batched and an ASGI app")
        return _mark(partial, endpoint, "asgi_app")

    return wrap


def check_class(class_name: str, methods: Iterable[tuple[str, Callable[..., Any], common_pb2.WebEndpoint | None, bool]],
                parameter_names: Iterable[str]) -> None:
    """Refuse web endpoints that cannot work on this class: arguments shadowed by class parameters
    (both come from the query string), a batched ASGI app, or two endpoints with one label."""
    parameters = set(parameter_names)
    labels: dict[str, str] = {}
    for name, function, endpoint, batched in methods:
        if endpoint is None:
            continue
        if endpoint.kind == ASGI_APP and batched:
            raise InvalidError(f"{class_name}.{name} cannot be both batched and an ASGI app")
        if endpoint.kind == FUNCTION:
            clash = sorted(parameters & set(list(inspect.signature(function).parameters)[1:]))
            if clash:
                raise InvalidError(
                    f"web endpoint {class_name}.{name} has argument(s) named like class parameters ({', '.join(clash)}); "
                    "both are read from the query string, so rename the argument(s)"
                )
        label = web_label(class_name, name, endpoint)
        if label in labels:
            raise InvalidError(f"{class_name}.{name} and {class_name}.{labels[label]} are both web endpoints labelled {label!r}")
        labels[label] = name

