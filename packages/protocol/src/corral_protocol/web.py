"""Web endpoint labels, shared by the SDK (early errors) and the control plane's gateway (authority)."""

from __future__ import annotations

from corral_protocol.v1 import common_pb2


def web_label(class_name: str, method_name: str, endpoint: common_pb2.WebEndpoint) -> str:
    """The endpoint's URL segment: its label, else `Class-method` (function) or `Class` (ASGI app)."""
    if endpoint.label:
        return endpoint.label
    if endpoint.kind == common_pb2.WEB_ENDPOINT_KIND_ASGI_APP:
        return class_name
    return f"{class_name}-{method_name}"
