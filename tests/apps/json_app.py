"""A class called in JSON by clients in other languages (tests/e2e/test_json_protocol.py and the
TypeScript client's end-to-end test)."""

from __future__ import annotations

import time

import corral

app = corral.App("json-protocol")


@app.cls()
class JsonModel:
    prefix: str = corral.parameter(default="")

    @corral.method()
    def echo(self, text: str, times: int = 1, data: bytes = b"", scale: float = 1.0, tag: str | None = None) -> dict[str, object]:
        return {
            "text": self.prefix + text * times, "times": times, "data": data, "scale": scale, "tag": tag,
            "types": [type(times).__name__, type(data).__name__, type(scale).__name__],
        }

    @corral.method()
    def big(self, n: int) -> int:
        return n + 1

    @corral.method()
    def fail(self, message: str) -> None:
        raise ValueError(message)

    @corral.method()
    def opaque(self) -> object:
        return object()

    @corral.method()
    def slow(self, seconds: float) -> str:
        time.sleep(seconds)
        return "done"
