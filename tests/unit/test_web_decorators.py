"""Web decorators: what they record, and misuse refused at decoration time; the gateway's typing
of class parameters from the query string; route resolution."""

from __future__ import annotations

import json

import pydantic
import pytest

import corral
from corral.exception import InvalidError
from corral_protocol.v1 import common_pb2, control_pb2
from corral_scheduler.gateway import HttpError, parameter_values
from corral_scheduler.model import AppRecord
from corral_scheduler.web_docs import openapi_document, swagger_ui_html
from corral_scheduler.web_routes import RouteTable, WebRoute


class Item(pydantic.BaseModel):
    name: str
    price: float


def endpoints(cls: corral.Cls) -> dict[str, common_pb2.WebEndpoint]:
    assert cls.definition is not None
    return {m.name: m.web_endpoint for m in cls.definition.to_proto().methods if m.HasField("web_endpoint")}


def test_stacking_order_and_the_fastapi_alias_record_the_same_endpoint() -> None:
    app = corral.App("unit")

    @app.cls()
    class API:
        @corral.method()
        @corral.web_endpoint(method="post", label="in")
        def below(self, data: dict) -> dict:
            return data

        @corral.web_endpoint(requires_proxy_auth=True, docs=True)
        @corral.method()
        def above(self) -> int:
            return 1

        @corral.fastapi_endpoint()
        def alone(self) -> int:
            return 2

        @corral.method()
        def plain(self) -> int:
            return 3

    found = endpoints(API)
    assert set(found) == {"below", "above", "alone"}
    assert (found["below"].http_method, found["below"].label) == ("POST", "in")
    assert found["above"].requires_proxy_auth and found["above"].docs
    assert found["alone"].kind == common_pb2.WEB_ENDPOINT_KIND_FUNCTION and found["alone"].http_method == "GET"


@pytest.mark.parametrize(
    ("decorator", "message"),
    [
        (lambda: corral.web_endpoint(method="CONNECT"), "GET, POST"),
        (lambda: corral.web_endpoint(label="has space"), "label"),
        (lambda: corral.asgi_app(label="a/b"), "label"),
        (lambda: corral.web_endpoint(lambda self: 1), "parentheses"),  # type: ignore[arg-type]
        (lambda: corral.asgi_app(lambda self: 1), "parentheses"),  # type: ignore[arg-type]
    ],
)
def test_bad_decorator_arguments_are_refused(decorator, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidError, match=message):
        decorator()


def test_misuse_is_refused_when_the_class_is_defined() -> None:
    app = corral.App("unit")
    with pytest.raises(InvalidError, match="only `self`"):
        corral.asgi_app()(lambda self, x: x)
    with pytest.raises(InvalidError, match="two web decorators"):
        corral.web_endpoint()(corral.asgi_app()(lambda self: None))
    with pytest.raises(InvalidError, match="lifecycle hook"):
        corral.web_endpoint()(corral.enter()(lambda self: None))
    with pytest.raises(InvalidError, match="same label 'x'|labelled 'x'"):
        @app.cls()
        class Clash:
            @corral.web_endpoint(label="x")
            def a(self) -> None: ...

            @corral.web_endpoint(label="x")
            def b(self) -> None: ...
    with pytest.raises(InvalidError, match="named like class parameters"):
        @app.cls()
        class Shadow:
            name: str = corral.parameter()

            @corral.web_endpoint()
            def greet(self, name: str) -> str:
                return name


def test_class_parameters_are_typed_by_the_schema() -> None:
    class_def = common_pb2.ClassDef(name="C", parameters=[
        common_pb2.ParameterSpec(name="s", type=common_pb2.PARAMETER_TYPE_STRING),
        common_pb2.ParameterSpec(name="n", type=common_pb2.PARAMETER_TYPE_INT),
        common_pb2.ParameterSpec(name="b", type=common_pb2.PARAMETER_TYPE_BOOL),
        common_pb2.ParameterSpec(name="raw", type=common_pb2.PARAMETER_TYPE_BYTES),
    ])
    values = parameter_values(class_def, [("s", "x"), ("n", "-3"), ("b", "Yes"), ("raw", "é"), ("other", "1")])
    assert [(v.name, v.value.WhichOneof("kind")) for v in values] == [
        ("s", "string_value"), ("n", "int_value"), ("b", "bool_value"), ("raw", "bytes_value"),
    ]
    assert (values[1].value.int_value, values[2].value.bool_value, values[3].value.bytes_value) == (-3, True, "é".encode())
    for bad in ([("n", "1.5")], [("b", "maybe")]):
        with pytest.raises(HttpError) as info:
            parameter_values(class_def, bad)
        assert info.value.status == 400


def test_routes_resolve_deployed_names_and_the_newest_dev_run() -> None:
    endpoint = common_pb2.WebEndpoint(kind=common_pb2.WEB_ENDPOINT_KIND_FUNCTION, http_method="GET")
    asgi = common_pb2.WebEndpoint(kind=common_pb2.WEB_ENDPOINT_KIND_ASGI_APP, label="site")
    class_def = common_pb2.ClassDef(name="API", methods=[
        common_pb2.MethodDef(name="health", web_endpoint=endpoint), common_pb2.MethodDef(name="web", web_endpoint=asgi),
        common_pb2.MethodDef(name="plain"),
    ])

    def record(app_id: str, kind: int, created_at: float) -> AppRecord:
        return AppRecord(app_id=app_id, name="shop", kind=kind, version=1, bundle_hash="", class_defs={"API": class_def},
                         created_at=created_at)

    apps = {
        "deployed": record("deployed", control_pb2.APP_KIND_DEPLOYED, 1.0),
        "old-dev": record("old-dev", control_pb2.APP_KIND_EPHEMERAL, 2.0),
        "new-dev": record("new-dev", control_pb2.APP_KIND_EPHEMERAL, 3.0),
    }
    table = RouteTable(apps)
    route, rest = table.resolve("/shop/API-health")  # type: ignore[misc]
    assert (route.app_id, route.method, rest) == ("deployed", "health", "")
    route, rest = table.resolve("/shop-dev/site/a/b")  # type: ignore[misc]
    assert (route.app_id, route.method, route.prefix, rest) == ("new-dev", "web", "/shop-dev/site", "/a/b")
    for missing in ("/shop/API-plain", "/shop/nothing", "/other/API-health", "/shop", "/"):
        assert table.resolve(missing) is None
    apps["deployed"].stopped = True
    assert table.resolve("/shop/API-health") is None


def test_docs_true_ships_an_openapi_description_built_from_the_signature() -> None:
    app = corral.App("unit")

    @app.cls()
    class Shop:
        region: str = corral.parameter(default="eu")
        shards: int = corral.parameter()

        @corral.web_endpoint(docs=True)
        def search(self, q: str, limit: int = 10, tags: list[str] | None = None, exact: bool = False) -> list[Item]:
            """Find items."""
            return []

        @corral.web_endpoint(method="POST", docs=True, requires_proxy_auth=True)
        def create(self, item: Item) -> Item:
            return item

        @corral.web_endpoint(method="PUT", docs=True)
        def rename(self, old: str, new: str | None = None) -> dict[str, str]:
            return {}

        @corral.web_endpoint()
        def quiet(self, q: str) -> str:
            return q

    found = endpoints(Shop)
    assert found["quiet"].openapi_json == ""
    search = json.loads(found["search"].openapi_json)
    assert search["openapi"].startswith("3.")
    operation = search["paths"]["/"]["get"]
    assert operation["description"] == "Find items."
    params = {p["name"]: p for p in operation["parameters"]}
    assert list(params) == ["q", "limit", "tags", "exact", "region", "shards"]
    assert all(p["in"] == "query" for p in params.values())
    assert params["q"]["required"] and params["q"]["schema"] == {"type": "string"}
    assert not params["limit"]["required"] and params["limit"]["schema"] == {"type": "integer", "default": 10}
    assert {"type": "array", "items": {"type": "string"}} in params["tags"]["schema"]["anyOf"]
    assert params["exact"]["schema"]["type"] == "boolean"
    assert params["region"]["schema"] == {"type": "string", "default": "eu"} and not params["region"]["required"]
    assert params["shards"]["schema"] == {"type": "integer"} and params["shards"]["required"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "array", "items": {"$ref": "#/components/schemas/Item"},
    }
    assert search["components"]["schemas"]["Item"]["required"] == ["name", "price"]

    # One pydantic argument: it is the whole body. Proxy auth: the token headers as security schemes.
    create = json.loads(found["create"].openapi_json)
    operation = create["paths"]["/"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Item"}
    assert {p["name"] for p in operation["parameters"]} == {"region", "shards"}
    assert {s["name"] for s in create["components"]["securitySchemes"].values()} == {"Corral-Key", "Corral-Secret"}
    assert "401" in operation["responses"]

    # Several arguments: a JSON object of keyword arguments.
    rename = json.loads(found["rename"].openapi_json)
    body = rename["paths"]["/"]["put"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["old"] and body["properties"]["old"] == {"type": "string"}
    assert body["properties"]["new"]["default"] is None

    # The gateway serves it under the endpoint's real path.
    route = WebRoute("app-id", Shop.definition.to_proto(), "search", found["search"], "/shop-dev/Shop-search")  # type: ignore[union-attr]
    served = json.loads(openapi_document(route))
    assert list(served["paths"]) == ["/shop-dev/Shop-search"] and served["paths"]["/shop-dev/Shop-search"]["get"]
    page = swagger_ui_html("Shop.search", "/shop-dev/Shop-search/openapi.json")
    assert "SwaggerUIBundle" in page and '"/shop-dev/Shop-search/openapi.json"' in page


def test_an_unrepresentable_annotation_does_not_break_the_description() -> None:
    app = corral.App("unit")

    class Opaque:
        pass

    @app.cls()
    class Odd:
        @corral.web_endpoint(method="POST", docs=True)
        def take(self, thing: Opaque, other: NoSuchName) -> None:  # type: ignore[name-defined]  # noqa: F821
            return None

    document = json.loads(endpoints(Odd)["take"].openapi_json)
    body = document["paths"]["/"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"] == {"thing": {}, "other": {}} and body["required"] == ["thing", "other"]
