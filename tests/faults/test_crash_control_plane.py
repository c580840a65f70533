"""kill -9 of the control plane (`corral up`), then a restart on the same home: spawned calls are
not lost. Each one is answered, its result or a clear error, within a bound."""

from __future__ import annotations

from pathlib import Path

import pytest

import corral
from conftest import start_cluster, wait_for
from e2e.e2e_helpers import client_for, containers, deploy, parameter, pids_with

NAME = "faults-crash-plane"
BOUND_S = 120  # every answer arrives within this, restart included


def test_spawned_calls_survive_a_kill_9_of_the_control_plane(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "home")
    restarted = None
    try:
        deploy(cluster, "deploy_model.py", NAME)
        client = client_for(cluster)
        Model = corral.Cls.from_name(NAME, "Model", client=client)
        collected = Model(tag="collected").bump.spawn()
        assert collected.get(timeout=BOUND_S) == 1  # read once; its result stays in the store

        # One container each: the first input runs, the rest wait in the queue.
        retried = Model.with_options(max_containers=1, retries=1)(tag="retried")
        strict = Model.with_options(max_containers=1)(tag="strict")
        retried_calls = [retried.sleep.spawn(1.0) for _ in range(3)]
        strict_calls = [strict.sleep.spawn(30.0), strict.sleep.spawn(0.1)]

        def running(tag: str) -> bool:
            return any(parameter(c, "tag") == tag and c.running_inputs == 1 for c in containers(client, NAME, "Model"))

        wait_for(lambda: running("retried") and running("strict"), timeout=60, message="both services running an input")
        old_containers = [c.container_id for c in containers(client, NAME, "Model")]
        client.close()

        cluster.process.kill()
        cluster.process.wait(timeout=30)
        (cluster.home / "server.json").unlink()  # a killed server leaves it; the restart writes it again
        restarted = start_cluster(cluster.home, cluster.port)
        client = client_for(restarted)

        assert corral.FunctionCall.from_id(collected.object_id, client=client).get(timeout=BOUND_S) == 1
        # Queued spawns run; the running one runs again, as its retry policy allows.
        assert [corral.FunctionCall.from_id(c.object_id, client=client).get(timeout=BOUND_S) for c in retried_calls] == ["slept"] * 3
        # Without retries, the input that was running fails clearly; the queued one still runs.
        with pytest.raises(Exception, match="restarted while Model.sleep ran"):
            corral.FunctionCall.from_id(strict_calls[0].object_id, client=client).get(timeout=BOUND_S)
        assert corral.FunctionCall.from_id(strict_calls[1].object_id, client=client).get(timeout=BOUND_S) == "slept"
        # The containers of the killed plane do not live on outside any cluster.
        wait_for(lambda: not any(pids_with(c) for c in old_containers), timeout=60, message="the old workers to exit")
        client.close()
    finally:
        if restarted is not None:
            restarted.stop()
        cluster.stop()
