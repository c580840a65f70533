"""GPU placement through the core: containers get exactly their GPUs by UUID, requests that fit
once capacity frees up wait, fallbacks are honoured, heartbeats refresh the inventory, and
requests no node could ever run fail at once with what the nodes offer."""

from __future__ import annotations

import pytest

from corral_protocol.v1 import common_pb2, control_pb2
from corral_scheduler import events as ev
from corral_scheduler.errors import InvalidArgument
from corral_scheduler.registry import validate_app
from corral_scheduler.testing import Harness, class_def

S = common_pb2
H100 = "NVIDIA H100 80GB HBM3"
A100_80 = "NVIDIA A100-SXM4-80GB"


def uuids_started(h: Harness, node: str) -> list[list[str]]:
    return [list(start.gpu_uuids) for start in h.nodes[node].started]


def test_no_two_containers_share_a_gpu_and_a_full_node_makes_requests_wait() -> None:
    h = Harness()
    node = h.add_node(gpus=[H100] * 4)
    two = h.bind(h.deploy(class_def("Two", gpu="H100:2", max_containers=2), name="two"), "Two")
    h.invoke(two)
    h.invoke(two)
    one = h.bind(h.deploy(class_def("One", gpu="H100"), name="one"), "One")
    waiting = h.invoke(one)
    assert uuids_started(h, node) == [["GPU-0", "GPU-1"], ["GPU-2", "GPU-3"]]
    assert h.live_containers(one) == [] and h.result(waiting) is None  # it fits once a GPU frees up: it waits
    h.tick()
    assert h.live_containers(one) == []
    first = h.live_containers(two)[0]
    h.bring_up(first)
    h.exit(first, 1, "crash")
    assert uuids_started(h, node)[-1] in (["GPU-0"], ["GPU-1"])
    in_use = [u for c in h.core.containers.containers.values() if c.state.is_live for u in c.gpu_uuids]
    assert len(in_use) == len(set(in_use)) == 3


def test_fallbacks_in_order_each_with_its_own_count() -> None:
    h = Harness()
    h100 = h.add_node("h100", gpus=[H100])
    a100 = h.add_node("a100", gpus=[A100_80] * 2)
    service = h.bind(h.deploy(class_def(gpu=["H100", "A100-80GB:2"], max_containers=2)))
    h.invoke(service)
    h.invoke(service)
    assert uuids_started(h, h100) == [["GPU-0"]]  # the first choice while it has room
    assert uuids_started(h, a100) == [["GPU-0", "GPU-1"]]  # then the fallback, with its own count


def test_a_gpu_request_no_node_can_ever_run_fails_at_once_saying_what_nodes_offer() -> None:
    h = Harness()
    h.add_node("cpu-box")
    h.add_node("h100-box", gpus=[H100] * 8)
    service = h.bind(h.deploy(class_def(gpu="A100-80GB:2")))
    result = h.result(h.invoke(service))
    assert result is not None and result.status == S.RESULT_STATUS_INTERNAL_ERROR
    assert "needs cpu=1, memory=512 MiB, gpu=A100-80GB:2" in result.message
    assert "cpu-box: cpu=8, memory=16384 MiB, gpus=[none]" in result.message
    assert "h100-box: cpu=8, memory=16384 MiB, gpus=[8x NVIDIA H100 80GB HBM3]" in result.message


def test_a_heartbeat_refreshes_the_inventory_and_a_vanished_gpu_is_not_placed() -> None:
    h = Harness()
    node = h.add_node(gpus=[H100] * 2)
    refreshed = common_pb2.NodeInventory()
    refreshed.CopyFrom(h.core.nodes.nodes[node].inventory)
    del refreshed.gpus[0]
    refreshed.gpus[0].memory_free_mib = 1234
    h.handle(ev.NodeHeartbeat(node, (), inventory=refreshed))
    inventory = h.core.nodes.nodes[node].info()  # what `corral node list` shows: the latest reading
    assert [g.memory_free_mib for g in inventory.inventory.gpus] == [1234]
    service = h.bind(h.deploy(class_def(gpu="H100", max_containers=2)))
    h.invoke(service)
    h.invoke(service)
    assert uuids_started(h, node) == [["GPU-1"]]


def test_the_control_plane_refuses_unknown_gpu_names_from_any_client() -> None:
    h = Harness()
    bad = class_def()
    bad.options.resources.gpu.CopyFrom(common_pb2.GpuRequest(choices=[common_pb2.GpuChoice(model="A10X", count=1)]))
    with pytest.raises(InvalidArgument, match="class Model: unknown GPU 'A10X'"):
        validate_app(control_pb2.CreateAppRequest(name="app", kind=control_pb2.APP_KIND_DEPLOYED, bundle_hash="b", classes=[bad]))
    app = h.deploy(class_def())
    override = common_pb2.ServiceOptions(resources=common_pb2.Resources(gpu=common_pb2.GpuRequest(models=["h100x"], count=1)))
    with pytest.raises(InvalidArgument, match="unknown GPU"):
        h.bind(app, override=override)
