"""The gateway's bound on concurrent connections (uvicorn's `limit_concurrency`): past it, a request
is answered 503 at once instead of queueing behind connections that hold it. The bound is lowered
to 8 for the test (the default, 1,024, needs more descriptors than a test should open); the gateway
and control plane are the real ones, served in this process on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from corral_scheduler import gateway
from corral_scheduler.server import serve


def test_past_the_connection_bound_requests_get_503_and_capacity_comes_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway, "MAX_CONNECTIONS", 8)

    async def probe() -> tuple[bytes, bytes]:
        server = await serve(tmp_path / "state", "token", "127.0.0.1", 0, http_port=0)
        try:
            assert server.gateway is not None
            host, port = server.gateway.url.removeprefix("http://").split(":")
            held = []
            for _ in range(8):  # requests whose headers never end, each holding a connection
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(b"GET /nothing HTTP/1.1\r\nhost: x\r\n")
                held.append((reader, writer))
            await asyncio.sleep(0.2)  # let the gateway accept them (not a timing assertion)

            async def request() -> bytes:
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(b"GET /nothing HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                answer = await asyncio.wait_for(reader.read(), 30)
                writer.close()
                return answer

            over = await request()
            for _, writer in held:
                writer.close()
            await asyncio.sleep(0.2)
            after = await request()
            return over, after
        finally:
            await server.stop()

    over, after = asyncio.run(probe())
    assert over.startswith(b"HTTP/1.1 503"), over[:100]
    assert after.startswith(b"HTTP/1.1 404"), after[:100]
