"""Where web endpoints live: URL paths of apps' endpoints, and resolving a request path to one.

URL scheme (see docs/architecture.md, "Web endpoints"):
  /<app>/<label>        a function endpoint; label defaults to `Class-method`
  /<app>/<label>/...    an ASGI app; label defaults to `Class`
where <app> is a deployed app's name, or `<name>-dev` for an ephemeral app (`corral run`,
`app.run()`; the newest one of that name wins), so a dev run never shadows the deployed app.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from corral_protocol.v1 import common_pb2, control_pb2
from corral_protocol.web import web_label
from corral_scheduler.errors import InvalidArgument
from corral_scheduler.model import AppRecord

DEV_SUFFIX = "-dev"


@dataclass(frozen=True)
class WebRoute:
    app_id: str
    class_def: common_pb2.ClassDef
    method: str
    endpoint: common_pb2.WebEndpoint
    prefix: str  # "/<app>/<label>"

    @property
    def is_asgi(self) -> bool:
        return self.endpoint.kind == common_pb2.WEB_ENDPOINT_KIND_ASGI_APP


def app_path(record: AppRecord) -> str:
    return record.name if record.kind == control_pb2.APP_KIND_DEPLOYED else record.name + DEV_SUFFIX


def _endpoints(classes: Iterable[common_pb2.ClassDef]) -> Iterable[tuple[common_pb2.ClassDef, common_pb2.MethodDef, str]]:
    for class_def in classes:
        for method in class_def.methods:
            if method.HasField("web_endpoint"):
                yield class_def, method, web_label(class_def.name, method.name, method.web_endpoint)


def check_labels(classes: Iterable[common_pb2.ClassDef]) -> None:
    """Two endpoints of one app may not share a URL."""
    seen: dict[str, str] = {}
    for class_def, method, label in _endpoints(classes):
        where = f"{class_def.name}.{method.name}"
        if label in seen:
            raise InvalidArgument(f"web endpoints {seen[label]} and {where} have the same label {label!r}; give one another label")
        seen[label] = where


def app_routes(record: AppRecord) -> dict[str, WebRoute]:
    """The app's endpoints by label."""
    base = "/" + quote(app_path(record))
    return {
        label: WebRoute(record.app_id, class_def, method.name, method.web_endpoint, f"{base}/{quote(label)}")
        for class_def, method, label in _endpoints(record.class_defs.values())
    }


def web_urls(record: AppRecord, http_url: str) -> dict[str, str]:
    """Each endpoint's URL by `Class.method`, for CreateAppResponse.web_urls."""
    if not http_url:
        return {}
    return {f"{r.class_def.name}.{r.method}": http_url + r.prefix for r in app_routes(record).values()}


class RouteTable:
    """Resolves request paths against the live apps; each app's routes are computed once."""

    def __init__(self, apps: Mapping[str, AppRecord]) -> None:
        self._apps = apps
        self._cache: dict[tuple[str, int], dict[str, WebRoute]] = {}

    def _find_app(self, segment: str) -> AppRecord | None:
        found: AppRecord | None = None
        for record in self._apps.values():
            if record.stopped or app_path(record) != segment:
                continue
            if record.kind == control_pb2.APP_KIND_DEPLOYED:
                return record
            if found is None or record.created_at >= found.created_at:
                found = record
        return found

    def resolve(self, path: str) -> tuple[WebRoute, str] | None:
        """The route serving `path` (already percent-decoded) and the rest of the path after its prefix."""
        parts = path.split("/", 3)  # "", app, label, rest
        if len(parts) < 3 or not parts[1] or not parts[2]:
            return None
        record = self._find_app(parts[1])
        if record is None:
            return None
        key = (record.app_id, record.version)  # a redeploy keeps the app id and brings new routes
        routes = self._cache.get(key)
        if routes is None:
            if len(self._cache) > 1024:
                self._cache.clear()
            routes = self._cache[key] = app_routes(record)
        route = routes.get(parts[2])
        if route is None:
            return None
        return route, "/" + parts[3] if len(parts) > 3 else ""
