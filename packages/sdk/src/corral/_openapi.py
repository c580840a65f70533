"""OpenAPI 3 descriptions of `@corral.web_endpoint(docs=True)` endpoints, built at definition time.

The SDK has the method, so it describes what the container will accept (see
`corral_runtime.web`): GET takes the arguments from the query string; other methods take a JSON
object of keyword arguments, or the whole body when the method takes one `dict` or one pydantic
model. The class's parameters are query parameters for every method. The document is shipped in
`WebEndpoint.openapi_json` with the path `/`; the gateway puts the endpoint's real path in its
place when it serves `<endpoint>/openapi.json` (and Swagger UI at `<endpoint>/docs`).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import enum
import inspect
import json
import types
import typing
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from corral_protocol.v1 import common_pb2

OPENAPI_VERSION = "3.1.0"
PLACEHOLDER_PATH = "/"
_ERROR = {"$ref": "#/components/schemas/Error"}
_ERROR_SCHEMA = {
    "title": "Error",
    "type": "object",
    "properties": {"error": {"type": "string"}, "traceback": {"type": "string"}},
    "required": ["error"],
}
_SCALARS: dict[Any, dict[str, Any]] = {
    bool: {"type": "boolean"},  # before int: bool is an int subclass, but the lookup is by identity
    int: {"type": "integer"},
    float: {"type": "number"},
    str: {"type": "string"},
    bytes: {"type": "string"},
    datetime.datetime: {"type": "string", "format": "date-time"},
    datetime.date: {"type": "string", "format": "date"},
    datetime.time: {"type": "string", "format": "time"},
    type(None): {"type": "null"},
}
_PARAMETER_SCHEMAS: dict[Any, dict[str, Any]] = {str: {"type": "string"}, int: {"type": "integer"},
                                                 bool: {"type": "boolean"}, bytes: {"type": "string"}}


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and hasattr(annotation, "model_json_schema")


def _unwrap_optional(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if _is_union(annotation) and len(args) == 1:
        return args[0]
    return annotation


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def takes_whole_body(annotation: Any) -> bool:
    """The same rule as the container's: one `dict` or pydantic model argument is the whole body."""
    annotation = _unwrap_optional(annotation)
    return annotation is dict or typing.get_origin(annotation) is dict or _is_model(annotation)


class _Builder:
    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def schema(self, annotation: Any) -> dict[str, Any]:
        """The JSON schema of a type hint; {} (anything) for what it cannot describe."""
        try:
            return self._schema(annotation)
        except Exception:
            return {}

    def _schema(self, annotation: Any) -> dict[str, Any]:
        if annotation is inspect.Parameter.empty or annotation is Any:
            return {}
        if annotation is None:
            return {"type": "null"}
        if annotation in _SCALARS:
            return dict(_SCALARS[annotation])
        if _is_model(annotation):
            return self._model(annotation)
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            return {"enum": [member.value for member in annotation]}
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is typing.Annotated:
            return self._schema(args[0])
        if _is_union(annotation):
            return {"anyOf": [self._schema(a) for a in args]}
        if origin is typing.Literal:
            return {"enum": list(args)}
        if annotation in (dict, collections.abc.Mapping) or origin in (dict, collections.abc.Mapping):
            schema: dict[str, Any] = {"type": "object"}
            if len(args) == 2 and args[1] is not Any:
                schema["additionalProperties"] = self._schema(args[1])
            return schema
        if annotation in (list, set, frozenset, tuple) or origin in (
            list, set, frozenset, collections.abc.Sequence, collections.abc.Iterable, collections.abc.Set,
        ):
            schema = {"type": "array"}
            if args:
                schema["items"] = self._schema(args[0])
            if annotation in (set, frozenset) or origin in (set, frozenset, collections.abc.Set):
                schema["uniqueItems"] = True
            return schema
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return {"type": "array", "items": self._schema(args[0])}
            return {"type": "array", "prefixItems": [self._schema(a) for a in args], "minItems": len(args), "maxItems": len(args)}
        if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
            return self._dataclass(annotation)
        return {}

    def _model(self, model: Any) -> dict[str, Any]:
        name = model.__name__
        if name not in self.components:
            self.components[name] = {}  # a recursive model refers to itself
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            self.components.update(schema.pop("$defs", {}))
            self.components[name] = schema
        return {"$ref": f"#/components/schemas/{name}"}

    def _dataclass(self, cls: type) -> dict[str, Any]:
        name = cls.__name__
        if name not in self.components:
            self.components[name] = {}
            try:
                hints = typing.get_type_hints(cls)
            except Exception:
                hints = {}
            properties, required = {}, []
            for f in dataclasses.fields(cls):
                properties[f.name] = self.schema(hints.get(f.name, inspect.Parameter.empty))
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    required.append(f.name)
            self.components[name] = {"title": name, "type": "object", "properties": properties, "required": required}
        return {"$ref": f"#/components/schemas/{name}"}


def _with_default(schema: dict[str, Any], default: Any) -> dict[str, Any]:
    if default is inspect.Parameter.empty:
        return schema
    if isinstance(default, bytes):
        default = default.decode("utf-8", "replace")
    try:
        json.dumps(default)
    except (TypeError, ValueError):
        return schema
    if "$ref" in schema:  # a sibling of $ref is ignored by some tools: wrap it
        schema = {"allOf": [schema]}
    return {**schema, "default": default}


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function, include_extras=True)
    except Exception:  # an unresolvable forward reference: resolve the others one by one
        hints = {}
        namespace = getattr(function, "__globals__", {})
        for name, annotation in getattr(function, "__annotations__", {}).items():
            if isinstance(annotation, str):
                try:
                    annotation = eval(annotation, namespace)  # what typing.get_type_hints does, per name
                except Exception:
                    continue
            hints[name] = annotation
        return hints


def build_openapi(class_name: str, method_name: str, function: Callable[..., Any], endpoint: common_pb2.WebEndpoint,
                  class_parameters: Iterable[Any]) -> dict[str, Any]:
    """The OpenAPI document of one function endpoint, with the path `/` standing for the endpoint's URL."""
    builder = _Builder()
    hints = _hints(function)
    signature = inspect.signature(function)
    arguments = [p for p in list(signature.parameters.values())[1:]
                 if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    method = endpoint.http_method or "GET"
    operation: dict[str, Any] = {
        "operationId": f"{class_name}_{method_name}".replace(".", "_"),
        "summary": f"{class_name}.{method_name}",
    }
    doc = inspect.getdoc(function)
    if doc:
        operation["description"] = doc
    parameters: list[dict[str, Any]] = []
    if method == "GET":
        for p in arguments:
            parameters.append({
                "name": p.name, "in": "query", "required": p.default is inspect.Parameter.empty,
                "schema": _with_default(builder.schema(hints.get(p.name, p.annotation)), p.default),
            })
    elif len(arguments) == 1 and takes_whole_body(hints.get(arguments[0].name)):
        p = arguments[0]
        operation["requestBody"] = {
            "required": p.default is inspect.Parameter.empty,
            "content": {"application/json": {"schema": builder.schema(hints.get(p.name))}},
        }
    elif arguments:
        properties = {p.name: _with_default(builder.schema(hints.get(p.name, p.annotation)), p.default) for p in arguments}
        required = [p.name for p in arguments if p.default is inspect.Parameter.empty]
        body: dict[str, Any] = {"title": f"{class_name}.{method_name} arguments", "type": "object",
                                "properties": properties, "additionalProperties": False}
        if required:
            body["required"] = required
        operation["requestBody"] = {"required": bool(required), "content": {"application/json": {"schema": body}}}
    for field in class_parameters:
        schema = dict(_PARAMETER_SCHEMAS.get(field.type, {}))
        if not field.required:
            schema = _with_default(schema, field.default)
        parameters.append({"name": field.name, "in": "query", "required": field.required, "schema": schema,
                           "description": f"a parameter of the class {class_name}"})
    if parameters:
        operation["parameters"] = parameters
    returns = hints.get("return", inspect.Parameter.empty)
    responses: dict[str, Any] = {
        "200": {"description": "The method's return value, as JSON",
                "content": {"application/json": {"schema": builder.schema(returns)}}},
        "400": {"description": "The request does not fit the method's arguments or the class's parameters",
                "content": {"application/json": {"schema": _ERROR}}},
        "500": {"description": "The method raised an exception", "content": {"application/json": {"schema": _ERROR}}},
    }
    components: dict[str, Any] = {"schemas": {**builder.components, "Error": _ERROR_SCHEMA}}
    if endpoint.requires_proxy_auth:
        responses["401"] = {"description": "Missing or wrong proxy token", "content": {"application/json": {"schema": _ERROR}}}
        components["securitySchemes"] = {
            "CorralKey": {"type": "apiKey", "in": "header", "name": "Corral-Key"},
            "CorralSecret": {"type": "apiKey", "in": "header", "name": "Corral-Secret"},
        }
        operation["security"] = [{"CorralKey": [], "CorralSecret": []}]
    operation["responses"] = dict(sorted(responses.items()))
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": f"{class_name}.{method_name}", "version": "0.1.0"},
        "paths": {PLACEHOLDER_PATH: {method.lower(): operation}},
        "components": components,
    }


def openapi_json(class_name: str, method_name: str, function: Callable[..., Any], endpoint: common_pb2.WebEndpoint,
                 class_parameters: Iterable[Any]) -> str:
    """`build_openapi` as compact JSON; a minimal document (with a warning) if the method defeats it."""
    parameters = list(class_parameters)
    try:
        document = build_openapi(class_name, method_name, function, endpoint, parameters)
        return json.dumps(document, separators=(",", ":"))
    except Exception as exc:
        warnings.warn(f"the OpenAPI description of {class_name}.{method_name} could not be built ({exc}); "
                      "its /docs page describes no arguments", stacklevel=2)
        method = (endpoint.http_method or "GET").lower()
        return json.dumps({
            "openapi": OPENAPI_VERSION, "info": {"title": f"{class_name}.{method_name}", "version": "0.1.0"},
            "paths": {PLACEHOLDER_PATH: {method: {"responses": {"200": {"description": "The method's return value, as JSON"}}}}},
        }, separators=(",", ":"))
