"""Corral: self-hosted serverless for Python, with Modal's class model.

Example:
    import corral

    app = corral.App("hello")

    @app.cls()
    class Greeter:
        @corral.method()
        def greet(self, name: str) -> str:
            return f"Hello, {name}!"

    with app.run():
        print(Greeter().greet.remote("world"))
"""

from __future__ import annotations

import os

from corral_protocol import env

__version__ = "0.1.0"

from corral._calls import FunctionCall  # noqa: E402
from corral._client import Client  # noqa: E402
from corral._context import current_input_id  # noqa: E402
from corral._parameters import parameter  # noqa: E402
from corral._partial import batched, concurrent, enter, exit, method  # noqa: E402
from corral._web import asgi_app, fastapi_endpoint, web_endpoint  # noqa: E402
from corral.app import App  # noqa: E402
from corral.cls import Cls, Method, Obj  # noqa: E402
from corral.function import Function  # noqa: E402
from corral.image import Image  # noqa: E402
from corral.retries import Retries  # noqa: E402
from corral.schedules import Cron, Period  # noqa: E402
from corral.secret import Secret  # noqa: E402


def is_local() -> bool:
    """True in the caller's program, False inside a Corral container."""
    return env.CORRAL_CONTAINER_ID not in os.environ


__all__ = [
    "App",
    "Client",
    "Cls",
    "Cron",
    "Function",
    "FunctionCall",
    "Image",
    "Method",
    "Obj",
    "Period",
    "Retries",
    "Secret",
    "__version__",
    "asgi_app",
    "batched",
    "concurrent",
    "current_input_id",
    "enter",
    "exit",
    "fastapi_endpoint",
    "is_local",
    "method",
    "parameter",
    "web_endpoint",
]
