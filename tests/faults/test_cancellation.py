"""Clients that give up mid-request cancel only their own input: under bounded HTTP load, the other
clients see no error and no container dies or restarts (issue 15: one impatient client used to
kill a container per cancellation that landed inside the worker's stream write)."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from faults_helpers import client_for

import corral
import faults_app
from conftest import Cluster, start_cluster
from e2e.e2e_helpers import pids_with

WELL_BEHAVED = 16
IMPATIENT = 8
LOAD_S = 4.0


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, corral.Client]]:
    cluster = start_cluster(tmp_path_factory.mktemp("cancel") / "home")
    client = client_for(cluster)
    try:
        with faults_app.app.run(client=client):
            yield cluster, client
    finally:
        client.close()
        cluster.stop()


def _alive(container_id: str) -> bool:
    return bool(pids_with(container_id))


def test_impatient_http_clients_cause_no_errors_for_others_and_no_container_restarts(running) -> None:  # type: ignore[no-untyped-def]
    cluster, _ = running
    base = cluster.http_url
    with httpx.Client(base_url=base, timeout=60) as http:
        first_pid = http.get("/faults-dev/Web-ping").json()["pid"]
    stop = time.monotonic() + LOAD_S
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    pids: set[str] = {first_pid}
    given_up = Counter[str]()
    lock = threading.Lock()

    def well_behaved() -> None:
        with httpx.Client(base_url=base, timeout=60) as http:  # keep-alive
            while time.monotonic() < stop:
                try:
                    response = http.get("/faults-dev/Web-ping")
                except httpx.HTTPError as err:
                    with lock:
                        failures.append(repr(err))
                    continue
                with lock:
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        pids.add(response.json()["pid"])
                    else:
                        failures.append(f"{response.status_code}: {response.text[:200]}")

    def impatient(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            # Gives up after 0-50 ms; some requests take 20 ms, so many are cancelled mid-call.
            timeout = httpx.Timeout(60, read=rng.uniform(0.0, 0.05))
            with httpx.Client(base_url=base, timeout=timeout) as http:
                try:
                    http.get("/faults-dev/Web-ping", params={"delay_ms": rng.choice([0, 20])})
                    outcome = "answered"
                except httpx.TimeoutException:
                    outcome = "gave up"
                with lock:
                    given_up[outcome] += 1

    threads = [threading.Thread(target=well_behaved) for _ in range(WELL_BEHAVED)]
    threads += [threading.Thread(target=impatient, args=(seed,)) for seed in range(IMPATIENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LOAD_S + 120)
    assert not any(thread.is_alive() for thread in threads)

    assert given_up["gave up"] > 0, "no client gave up: the probe did not probe"
    assert statuses[200] > 0
    assert failures == [], f"{len(failures)} errors for well-behaved clients, e.g. {failures[:3]}"
    dead = [pid for pid in pids if not _alive(pid)]
    assert dead == [], f"containers died under cancellations: {dead}"
    assert "lost the control plane" not in cluster.logs()
    assert "exiting with code" not in cluster.logs()
    print(f"load: {statuses[200]} ok, {given_up['gave up']} given up, {given_up['answered']} impatient answered, containers {sorted(pids)}")
