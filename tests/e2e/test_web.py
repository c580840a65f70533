"""Web endpoints and ASGI apps through the real HTTP gateway of a real `corral up`, with httpx.

Assertions are on status codes, bodies, counts and orderings, never on wall-clock thresholds.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

import web_app
import web_lifespan_app
from conftest import APPS, Cluster, wait_for
from corral_protocol.v1 import common_pb2
from e2e_helpers import client_for, containers


@pytest.fixture(scope="module")
def running(cluster: Cluster):  # type: ignore[no-untyped-def]
    """The app, run ephemerally (dev mode): served under /web-dev/."""
    client = client_for(cluster)
    with web_app.app.run(client=client):
        assert web_app.app.running is not None
        yield web_app.app.running


@pytest.fixture(scope="module")
def http(cluster: Cluster):  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=cluster.http_url, timeout=60) as client:
        yield client


def test_deployed_urls_are_reported_and_serve(running, cluster: Cluster, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    urls = running.web_urls
    assert urls["API.health"] == f"{cluster.http_url}/web-dev/API-health"
    assert urls["API.greet"] == f"{cluster.http_url}/web-dev/greet"
    assert urls["Site.web"] == f"{cluster.http_url}/web-dev/site"
    assert len(urls) == 17  # every endpoint of the app, ASGI apps included
    response = httpx.get(urls["API.health"], timeout=60)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "healthy"}


def test_get_takes_typed_arguments_from_the_query_string(running, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    assert http.get("/web-dev/API-add", params={"a": 2, "b": 3, "scale": 0.5}).json() == {"sum": 2.5}
    assert http.get("/web-dev/API-add", params={"a": 2}).json() == {"sum": 3.0}
    bad = http.get("/web-dev/API-add", params={"a": "two"})
    assert bad.status_code == 400 and "'a'" in bad.json()["error"] and "int" in bad.json()["error"]
    missing = http.get("/web-dev/API-add", params={"b": 1})
    assert missing.status_code == 400 and "'a'" in missing.json()["error"]
    unknown = http.get("/web-dev/API-add", params={"a": 1, "c": 1})
    assert unknown.status_code == 400 and "'c'" in unknown.json()["error"]


def test_post_takes_a_json_body(running, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    # One dict argument: the whole body.
    assert http.post("/web-dev/API-process", json={"x": [1, 2], "y": None}).json() == {"result": {"x": [1, 2], "y": None}}
    # Otherwise keyword arguments.
    assert http.post("/web-dev/greet", json={"name": "Ada", "excited": True}).json() == "Hello, Ada!"
    assert http.post("/web-dev/greet", json={"name": "Ada"}).json() == "Hello, Ada."
    # A pydantic argument is validated from the body, a pydantic return value serialized.
    assert http.post("/web-dev/API-price", json={"name": "pen", "price": 1.25}).json() == {"name": "PEN", "price": 2.5}
    invalid = http.post("/web-dev/API-price", json={"name": "pen"})
    assert invalid.status_code == 400 and "price" in invalid.json()["error"]


def test_lists_and_scalars_come_back_as_json(running, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    assert http.get("/web-dev/API-listing").json() == [1, "two", None, 3.5]
    assert http.get("/web-dev/API-scalar").json() == 42


def test_bad_requests_are_400_and_disturb_no_one(running, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=str(http.base_url), timeout=60) as client:
            return await asyncio.gather(
                client.post("/web-dev/greet", content=b"{not json", headers={"content-type": "application/json"}),
                client.post("/web-dev/greet", json={"excited": True}),
                client.post("/web-dev/greet", json=["a", "list"]),
                client.post("/web-dev/greet", json={"name": "Bo"}),
                client.get("/web-dev/API-fail"),
                client.get("/web-dev/API-health"),
            )

    malformed, missing, not_object, good, failed, health = asyncio.run(burst())
    assert malformed.status_code == 400 and "malformed JSON" in malformed.json()["error"]
    assert missing.status_code == 400 and "'name'" in missing.json()["error"]
    assert not_object.status_code == 400 and "object" in not_object.json()["error"]
    assert good.status_code == 200 and good.json() == "Hello, Bo."
    assert failed.status_code == 500
    assert health.json() == {"status": "healthy"}


def test_user_exception_is_a_500_with_traceback_in_dev_mode(running, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    response = http.get("/web-dev/API-fail")
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "ValueError: bad thing happened"
    assert "Traceback" in body["traceback"] and "web_app.py" in body["traceback"]


def test_unknown_endpoints_are_404_and_wrong_methods_405(running, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    for path in ("/no-such-app/API-health", "/web-dev/API-nothing", "/web-dev/API-health/extra", "/web-dev", "/", "/web/API-health"):
        response = http.get(path)
        assert response.status_code == 404, path
        assert "error" in response.json()
    wrong = http.get("/web-dev/greet")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"


def test_a_body_over_the_limit_is_413(running, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    response = http.post("/web-dev/API-process", content=b"x" * (16 * 1024 * 1024 + 1), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "limit" in response.json()["error"]
    assert http.post("/web-dev/API-process", json={"ok": 1}).json() == {"result": {"ok": 1}}


def test_docs_true_serves_openapi_json_and_swagger_ui_without_a_container(running, cluster: Cluster, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    page = http.get("/web-dev/Catalog-search/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in page.text and "/web-dev/Catalog-search/openapi.json" in page.text
    spec = http.get("/web-dev/Catalog-search/openapi.json")
    assert spec.status_code == 200 and spec.headers["content-type"] == "application/json"
    document = spec.json()
    assert document["openapi"].startswith("3.")
    operation = document["paths"]["/web-dev/Catalog-search"]["get"]
    assert operation["description"] == "Search the catalog."
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert list(parameters) == ["q", "limit", "tags", "region"]  # the method's arguments, then the class's parameters
    assert parameters["q"]["required"] and parameters["q"]["schema"]["type"] == "string"
    assert parameters["limit"]["schema"] == {"type": "integer", "default": 10}
    assert parameters["region"]["schema"] == {"type": "string", "default": "eu"}
    # A POST endpoint: its JSON body (one pydantic argument is the whole body); /docs is a GET regardless.
    post = http.get("/web-dev/Catalog-add/openapi.json").json()
    body = post["paths"]["/web-dev/Catalog-add"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Item"}
    assert set(post["components"]["schemas"]["Item"]["properties"]) == {"name", "price"}
    assert http.get("/web-dev/Catalog-add/docs").status_code == 200
    assert http.post("/web-dev/Catalog-search/docs").status_code == 405
    # The gateway answered from the definition: no container was started for it.
    assert containers(client_for(cluster), "web", "Catalog") == []
    # The endpoints themselves work as always.
    assert http.get("/web-dev/Catalog-search", params=[("q", "pen"), ("tags", "a"), ("tags", "b"), ("region", "us")]).json() == {
        "q": "pen", "limit": 10, "tags": ["a", "b"], "region": "us",
    }
    assert http.post("/web-dev/Catalog-add", json={"name": "pen", "price": 1.5}).json() == {"name": "pen", "price": 1.5}


def test_without_docs_the_docs_paths_are_404(running, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    for path in ("/web-dev/API-health/docs", "/web-dev/API-health/openapi.json", "/web-dev/greet/docs"):
        assert http.get(path).status_code == 404, path


def test_timeout_is_504_and_the_next_request_is_served(running, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    response = http.get("/web-dev/Slow-nap", params={"seconds": 30})
    assert response.status_code == 504 and "timed out" in response.json()["error"]
    assert http.get("/web-dev/Slow-nap", params={"seconds": 0}).json() == {"slept": 0}


def test_parameterized_class_takes_parameters_from_the_query(running, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    plain = http.get("/web-dev/Greeter-greet", params={"name": "bo"}).json()
    assert plain["message"] == "hello bo"
    typed = http.get("/web-dev/Greeter-greet", params={"name": "bo", "greeting": "hey", "times": 2, "shout": "true"}).json()
    assert typed["message"] == "HEY BO HEY BO"
    assert typed["pid"] != plain["pid"]  # another parameter set: another service, another container
    # The same parameter set through the Python SDK binds the same service.
    assert web_app.Greeter(greeting="hey", times=2, shout=True).greet.remote("bo")["pid"] == typed["pid"]
    bad = http.get("/web-dev/Greeter-greet", params={"name": "bo", "times": "many"})
    assert bad.status_code == 400 and "times" in bad.json()["error"]


def test_asgi_app_serves_its_routes_under_the_class_prefix(running, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    first = http.get("/web-dev/site/hello/ada").json()
    second = http.get("/web-dev/site/hello/bob").json()
    assert first["message"] == "hi ada" and second["message"] == "hi bob"
    assert first["builds"] == second["builds"] == 1 and first["pid"] == second["pid"]  # built once, after @enter
    echo = http.post("/web-dev/site/echo", content=b"\x00raw bytes\xff")
    assert echo.content == b"\x00raw bytes\xff" and echo.headers["x-echo"] == "yes"
    assert http.get("/web-dev/site/where", params={"q": "1"}).json() == {
        "root_path": "/web-dev/site", "path": "/web-dev/site/where", "query": "q=1",
    }
    assert http.get("/web-dev/site/missing").status_code == 404  # the app's own 404
    assert http.get("/web-dev/site/boom").status_code == 500
    assert http.get("/web-dev/site/hello/cy").json()["message"] == "hi cy"


def test_asgi_lifespan_runs_at_start_and_at_a_graceful_stop(cluster: Cluster, http: httpx.Client, shared_dir: Path) -> None:
    marker = shared_dir / "lifespan.log"
    with web_lifespan_app.app.run(client=client_for(cluster)):
        state = http.get("/web-lifespan-dev/life/state", params={"marker": str(marker)})
        assert state.status_code == 200, state.text
        assert state.json()["pool"] == "ready"  # the state the lifespan yielded, in the request's scope
        assert state.json()["started"] == f"started by {state.json()['pid']}"  # set by the startup, read by a route
        assert marker.read_text().splitlines() == ["enter", "build", "lifespan-startup"]
        # A startup that fails is the container's init failure, with the app's message.
        broken = http.get("/web-lifespan-dev/broken/")
        assert broken.status_code == 500 and "the database is not there" in broken.json()["error"]
        # An app that raises on the lifespan scope does not support it, and is served without it.
        bare = http.get("/web-lifespan-dev/bare/")
        assert bare.status_code == 200 and bare.text == "bare ok"
    # Leaving `app.run()` stops the containers gracefully: lifespan shutdown, then the @exit hooks.
    wait_for(lambda: "exit" in marker.read_text().splitlines(), timeout=60, message="the exit hook")
    assert marker.read_text().splitlines() == ["enter", "build", "lifespan-startup", "lifespan-shutdown", "exit"]


def test_asgi_streaming_response_passes_through(running, http: httpx.Client, shared_dir: Path) -> None:  # type: ignore[no-untyped-def]
    release = shared_dir / "release"
    with http.stream("GET", "/web-dev/site/stream", params={"release": str(release)}) as response:
        lines = response.iter_lines()
        # The first chunk arrives while the app still waits: nothing is buffered along the way.
        assert next(lines) == "first"
        release.touch()
        assert list(lines) == ["released"]


def test_batched_endpoint_groups_concurrent_requests(running, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=str(http.base_url), timeout=60) as client:
            return await asyncio.gather(*[client.post("/web-dev/Doubler-double", json={"xs": i}) for i in range(8)])

    results = [r.json() for r in asyncio.run(burst())]
    assert [r["value"] for r in results] == [i * 2 for i in range(8)]
    assert [r["batch"] for r in results] == [4] * 8  # batches close because they are full (wait_ms=3000)


def test_a_burst_scales_a_service_up_from_zero_and_every_request_is_answered(running, cluster: Cluster, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    client = client_for(cluster)
    assert [c for c in containers(client, "web", "Burst")] == []

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=str(http.base_url), timeout=120) as client:
            return await asyncio.gather(*[client.get("/web-dev/Burst-work", params={"i": i}) for i in range(12)])

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 12
    assert [r.json()["i"] for r in responses] == list(range(12))
    # The queue of 12 asked the autoscaler for 12 containers, capped at max_containers=3.
    assert len(containers(client, "web", "Burst")) == 3


def test_proxy_auth_needs_a_token_from_corral_token_create(running, cluster: Cluster, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    assert http.get("/web-dev/API-secret").status_code == 401
    assert http.get("/web-dev/Private").status_code == 401
    created = cluster.corral("token", "create", "--name", "tests")
    assert created.returncode == 0, created.stderr
    key = re.search(r"Corral-Key: (\S+)", created.stdout).group(1)  # type: ignore[union-attr]
    secret = re.search(r"Corral-Secret: (\S+)", created.stdout).group(1)  # type: ignore[union-attr]
    assert http.get("/web-dev/API-secret", headers={"Corral-Key": key, "Corral-Secret": "cs-wrong"}).status_code == 401
    assert http.get("/web-dev/API-secret", headers={"Corral-Key": "ck-unknown", "Corral-Secret": secret}).status_code == 401
    ok = http.get("/web-dev/API-secret", headers={"Corral-Key": key, "Corral-Secret": secret})
    assert ok.status_code == 200 and ok.json() == "classified"
    private = http.get("/web-dev/Private/", headers={"Corral-Key": key, "Corral-Secret": secret})
    assert private.json() == {"private": "yes"}
    # Endpoints without the flag need nothing.
    assert http.get("/web-dev/API-health").status_code == 200
    # The store keeps only a hash of the secret.
    assert secret.encode() not in (cluster.home / "state" / "state.db").read_bytes()


def test_corral_deploy_prints_urls_and_hides_tracebacks(cluster: Cluster, http: httpx.Client) -> None:
    result = cluster.corral("deploy", str(APPS / "web_app.py"), "--name", "web-prod")
    assert result.returncode == 0, result.stderr
    assert f"API.health: {cluster.http_url}/web-prod/API-health" in result.stdout
    assert f"Site.web: {cluster.http_url}/web-prod/site" in result.stdout
    try:
        assert http.get("/web-prod/API-health").json() == {"status": "healthy"}
        failed = http.get("/web-prod/API-fail")
        assert failed.status_code == 500
        assert failed.json() == {"error": "ValueError: bad thing happened"}  # no traceback outside dev mode
    finally:
        cluster.corral("app", "stop", "web-prod")
    assert http.get("/web-prod/API-health").status_code == 404


def test_the_same_method_still_works_with_remote(running) -> None:  # type: ignore[no-untyped-def]
    assert web_app.API().health.remote() == {"status": "healthy"}
    assert web_app.API().process.remote({"a": 1}) == {"result": {"a": 1}}


def test_web_decorators_record_the_endpoint_in_the_class_definition() -> None:
    methods = {m.name: m for m in web_app.API.definition.to_proto().methods}  # type: ignore[union-attr]
    assert methods["health"].web_endpoint.http_method == "GET"
    assert methods["process"].web_endpoint.http_method == "POST"
    assert methods["greet"].web_endpoint.label == "greet"
    assert methods["secret"].web_endpoint.requires_proxy_auth
    site = web_app.Site.definition.to_proto().methods[0]  # type: ignore[union-attr]
    assert site.web_endpoint.kind == common_pb2.WEB_ENDPOINT_KIND_ASGI_APP
    assert site.web_endpoint.label == "site"
