"""Web endpoint rules shared by the SDK (early errors), the control plane's gateway (authority) and
the container: endpoint labels, and how deeply a JSON body may nest."""

from __future__ import annotations

import re

from corral_protocol.v1 import common_pb2


def web_label(class_name: str, method_name: str, endpoint: common_pb2.WebEndpoint) -> str:
    """The endpoint's URL segment: its label, else `Class-method` (function) or `Class` (ASGI app)."""
    if endpoint.label:
        return endpoint.label
    if endpoint.kind == common_pb2.WEB_ENDPOINT_KIND_ASGI_APP:
        return class_name
    return f"{class_name}-{method_name}"


MAX_JSON_DEPTH = 128
"""How deeply a web request's JSON body may nest arrays and objects. The gateway answers 400 past
it, before the body reaches a container, whose parser would hit Python's recursion limit."""

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `body`, read as JSON, nests arrays/objects more than `limit` deep. Linear and
    allocation-light: strings are removed and only brackets are scanned (not a validator: a
    malformed body is the container's 400 to give)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = 0
    for byte in brackets:
        if byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False
