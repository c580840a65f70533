"""Queue overload: a bounded queue (CORRAL_MAX_QUEUE) refuses what does not fit, clearly, and loses
nothing it accepted; over HTTP a full queue is a 503 with Retry-After. Every caller is answered
within a bound."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

import corral
import web_app
from conftest import start_cluster
from corral_protocol import env
from e2e.e2e_helpers import client_for, deploy

BOUND_S = 120
MAX_QUEUE = 10


def test_a_full_queue_refuses_clearly_and_loses_nothing_it_accepted(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "home", extra_env={env.CORRAL_MAX_QUEUE: str(MAX_QUEUE)})
    try:
        deploy(cluster, "deploy_model.py", "faults-overload")
        client = client_for(cluster)
        one = corral.Cls.from_name("faults-overload", "Model", client=client).with_options(max_containers=1)(tag="q")
        accepted, refused = [], []
        # Each input takes 3 s, far longer than the 100 spawns take, so nothing drains the queue
        # while they are made: what is accepted is the queue's bound and what already left it.
        for _ in range(100):
            try:
                accepted.append(one.sleep.spawn(3))
            except corral.exception.QueueFullError as err:
                assert "is full" in str(err) and str(MAX_QUEUE) in str(err)
                refused.append(err)
        assert len(accepted) + len(refused) == 100
        assert refused and MAX_QUEUE <= len(accepted) <= MAX_QUEUE + 2  # the queue, and what already left it
        assert [call.get(timeout=BOUND_S) for call in accepted] == ["slept"] * len(accepted)

        # Over HTTP: 40 requests at once at a class of at most 3 containers (0.3 s each).
        with web_app.app.run(client=client):
            url = web_app.app.running.web_urls["Burst.work"]  # type: ignore[union-attr]

            async def burst() -> list[httpx.Response]:
                async with httpx.AsyncClient(timeout=BOUND_S) as http:
                    return await asyncio.gather(*(http.get(url, params={"i": i}) for i in range(40)))

            responses = asyncio.run(burst())
        codes = sorted(r.status_code for r in responses)
        assert set(codes) <= {200, 503}, codes
        assert 503 in codes and codes.count(200) >= MAX_QUEUE
        for response in responses:
            if response.status_code == 503:
                assert response.headers["retry-after"] == "1" and "is full" in response.text
            else:
                assert response.json()["i"] == int(str(response.request.url).rsplit("=", 1)[1])
        client.close()
    finally:
        cluster.stop()
