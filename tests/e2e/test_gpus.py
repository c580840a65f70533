"""GPU placement end to end on a `corral up` whose node declares simulated GPUs (H100:4): each
container sees exactly its own GPUs by UUID in CUDA_VISIBLE_DEVICES, fallbacks are honoured, and
a request no node could ever run fails at once with what the node offers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import corral
from conftest import Cluster, start_cluster
from corral_protocol import env as corral_env
from corral_protocol.v1 import control_pb2
from e2e_helpers import client_for, deploy


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("gpu") / "home", extra_env={corral_env.CORRAL_SIMULATE_GPUS: "H100:4"})
    try:
        deploy(cluster, "gpu_app.py", "e2e-gpu")
        yield cluster
    finally:
        cluster.stop()


def node_gpus(cluster: Cluster) -> dict[str, str]:
    client = client_for(cluster)
    (node,) = client.call(client.stub.ListNodes, control_pb2.ListNodesRequest()).nodes
    assert node.inventory.simulated_gpus
    return {g.uuid: g.model for g in node.inventory.gpus}


def test_an_h100_2_class_sees_two_distinct_gpus_by_uuid(gpu_cluster: Cluster) -> None:
    gpus = node_gpus(gpu_cluster)
    assert list(gpus.values()) == ["NVIDIA H100 80GB HBM3"] * 4
    client = client_for(gpu_cluster)
    two = corral.Cls.from_name("e2e-gpu", "TwoH100", client=client)
    first = two().devices.remote().split(",")
    assert len(first) == 2 and len(set(first)) == 2 and set(first) <= set(gpus), first
    # The first choice (A100-80GB) is on no node: the fallback, one H100, not one of the first two.
    fallback = corral.Cls.from_name("e2e-gpu", "FallsBackToH100", client=client)().devices.remote().split(",")
    assert len(fallback) == 1 and fallback[0] in gpus and fallback[0] not in first, (first, fallback)

    listed = gpu_cluster.corral("node", "list", "--verbose")
    assert listed.returncode == 0, listed.stderr
    assert "1/4 free: 4x NVIDIA H100 80GB HBM3 (simulated)" in listed.stdout, listed.stdout
    assert all(f"{uuid} NVIDIA H100 80GB HBM3" in listed.stdout for uuid in gpus), listed.stdout
    assert listed.stdout.count(", in use") == 3, listed.stdout

    # A CPU-only class sees no GPU.
    assert corral.Cls.from_name("e2e-gpu", "CpuOnly", client=client)().devices.remote() == ""


def test_an_unplaceable_request_fails_at_once_with_what_the_node_offers(gpu_cluster: Cluster) -> None:
    needs = corral.Cls.from_name("e2e-gpu", "NeedsA100", client=client_for(gpu_cluster))
    with pytest.raises(corral.exception.Error) as err:
        needs().devices.remote()
    message = str(err.value)
    assert "no node can ever run a container that needs" in message and "gpu=A100-80GB:2" in message, message
    assert "gpus=[4x NVIDIA H100 80GB HBM3] (simulated)" in message, message


def test_unknown_gpu_names_are_refused_when_the_class_is_defined(tmp_path: Path) -> None:
    app = corral.App("e2e-gpu-bad")
    with pytest.raises(corral.exception.InvalidError, match="unknown GPU 'A10X'"):
        @app.cls(gpu="A10X")
        class Bad:
            @corral.method()
            def f(self) -> None: ...
