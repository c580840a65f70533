"""What the gateway serves for `docs=True` endpoints: the OpenAPI description the SDK built, with the
route's path, and a Swagger UI page that loads it."""

from __future__ import annotations

import html
import json
from typing import Any

from corral_scheduler.web_routes import WebRoute

# Swagger UI assets, from jsDelivr as FastAPI's default.
SWAGGER_JS = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"
SWAGGER_CSS = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"


def openapi_document(route: WebRoute) -> bytes:
    """The endpoint's OpenAPI description with its path (`/` in what the SDK built) made the route's."""
    document = json.loads(route.endpoint.openapi_json)
    operations: dict[str, Any] = next(iter((document.get("paths") or {}).values()), {})
    document["paths"] = {route.prefix: operations}
    return json.dumps(document, separators=(",", ":")).encode()


def swagger_ui_html(title: str, openapi_url: str) -> str:
    url = json.dumps(openapi_url).replace("<", "\\u003c")  # a JS string that cannot close the script
    return f"""<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link type="text/css" rel="stylesheet" href="{SWAGGER_CSS}">
<title>{html.escape(title)} - Swagger UI</title>
</head>
<body>
<div id="swagger-ui"></div>
<script src="{SWAGGER_JS}"></script>
<script>
const ui = SwaggerUIBundle({{
    url: {url},
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
}})
</script>
</body>
</html>
"""
