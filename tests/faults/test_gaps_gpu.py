"""CUDA_VISIBLE_DEVICES from the GPUs the control plane assigned, on a node that simulates two H100s
(`CORRAL_SIMULATE_GPUS`, a simulated inventory named as such: placement, reservation and the
container's environment are the real code paths; nothing uses the GPUs). Empty during snap=True
hooks on a node without GPU checkpointing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import corral
import gaps_gpu_app
from conftest import Cluster, require_snapshot_prerequisites, start_cluster
from corral_protocol import env as corral_env
from corral_protocol.v1 import control_pb2
from e2e.e2e_helpers import client_for


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, corral.Client]]:
    cluster = start_cluster(tmp_path_factory.mktemp("gaps-gpu") / "home", extra_env={corral_env.CORRAL_SIMULATE_GPUS: "H100:2"})
    client = client_for(cluster)
    try:
        with gaps_gpu_app.app.run(client=client):
            yield cluster, client
    finally:
        client.close()
        cluster.stop()


def _node_gpus(client: corral.Client) -> set[str]:
    (node,) = client.call(client.stub.ListNodes, control_pb2.ListNodesRequest()).nodes
    return {gpu.uuid for gpu in node.inventory.gpus}


def test_cuda_visible_devices_names_the_assigned_gpus(gpu_cluster: tuple[Cluster, corral.Client]) -> None:
    gpus = _node_gpus(gpu_cluster[1])
    assert len(gpus) == 2
    one = gaps_gpu_app.OneGpu().visible.remote()
    assert one in gpus
    # Its GPU stays reserved while its container lives (2 s after its last input): a class that
    # wants both GPUs waits for that, then sees both.
    assert set(gaps_gpu_app.TwoGpus().visible.remote().split(",")) == gpus


def test_snap_hooks_see_no_gpu_and_serving_sees_its_gpu(gpu_cluster: tuple[Cluster, corral.Client]) -> None:
    require_snapshot_prerequisites()
    during_snap, after = gaps_gpu_app.SnapGpu().seen.remote()
    assert during_snap == "" and after in _node_gpus(gpu_cluster[1])
