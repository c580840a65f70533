"""Placement (`corral_scheduler.placement`): table-driven cases, and a property test that a
cluster never over-commits a node whatever the sequence of placements and releases."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral_protocol import gpus as gpu_names
from corral_protocol.v1 import common_pb2
from corral_scheduler.placement import Cluster, NodeCapacity, Placement, Unplaceable, choose_node

H100 = "NVIDIA H100 80GB HBM3"
A100_80 = "NVIDIA A100-SXM4-80GB"
A100_40 = "NVIDIA A100-SXM4-40GB"
L40S = "NVIDIA L40S"
L4 = "NVIDIA L4"
T4 = "Tesla T4"


def node(name: str, gpus: str = "", cpu: float = 64, memory: int = 512 * 1024, used: int = 0, cpu_used: float = 0,
         keys: frozenset[str] = frozenset(), mig: tuple[int, ...] = ()) -> NodeCapacity:
    """`gpus` as "H100:8" or "H100:4,A100-80GB:4" (NVML names from the table); the first `used` are in use."""
    devices = []
    for model, count in gpu_names.parse_simulated(gpus) if gpus else []:
        for _ in range(count):
            index = len(devices)
            devices.append(common_pb2.GpuDevice(
                index=index, uuid=f"GPU-{name}-{index}", model=model.nvml_name,
                mig_mode=common_pb2.GPU_MIG_MODE_ENABLED if index in mig else common_pb2.GPU_MIG_MODE_DISABLED,
            ))
    capacity = NodeCapacity(name, cpu, memory, devices)
    capacity.gpus_in_use = {d.uuid for d in devices[:used]}
    capacity.cpu_reserved = cpu_used
    capacity.snapshot_keys = set(keys)
    return capacity


def want(gpu: str | list[str] | None = None, cpu: float = 1, memory: int = 1024) -> common_pb2.Resources:
    res = common_pb2.Resources(cpu=cpu, memory_mib=memory)
    if gpu is not None:
        res.gpu.CopyFrom(gpu_names.parse_request(gpu))
    return res


@dataclass
class Case:
    name: str
    nodes: list[NodeCapacity]
    request: common_pb2.Resources
    node: str | None  # None: waits
    gpus: tuple[int, ...] = ()
    key: str = ""


CASES = [
    Case("cpu-only goes to the tightest cpu fit", [node("roomy", cpu=16), node("snug", cpu=4, cpu_used=2)], want(cpu=1), "snug"),
    Case("cpu-only that only the roomy node holds", [node("roomy", cpu=16), node("snug", cpu=4, cpu_used=2)], want(cpu=3), "roomy"),
    Case("cpu-only avoids free GPUs", [node("gpu", "H100:8"), node("cpu")], want(), "cpu"),
    Case("cpu-only prefers a GPU node whose GPUs are all taken", [node("idle", "H100:8"), node("full", "H100:8", used=8)], want(), "full"),
    Case("busy node: wait", [node("n", cpu=2, cpu_used=2)], want(cpu=1), None),
    Case("H100:2 on an H100 node", [node("a", "H100:8")], want("H100:2"), "a", (0, 1)),
    Case("used devices are skipped", [node("a", "H100:4", used=2)], want("H100:2"), "a", (2, 3)),
    Case("best fit: the node with fewer free GPUs", [node("idle", "H100:8"), node("part", "H100:8", used=5)], want("H100:2"), "part", (5, 6)),
    Case("best fit: exact fit wins over more room", [node("three", "H100:8", used=5), node("two", "H100:8", used=6)], want("H100:2"), "two", (6, 7)),
    Case("8 GPUs need a whole free node", [node("part", "H100:8", used=1), node("idle", "H100:8")], want("H100:8"), "idle", tuple(range(8))),
    Case("1 GPU keeps the whole node whole", [node("idle", "H100:8"), node("part", "H100:8", used=7)], want("H100"), "part", (7,)),
    Case("too few free: wait", [node("a", "H100:8", used=7)], want("H100:2"), None),
    Case("fallback order before best fit", [node("a100", "A100-80GB:8", used=7), node("h100", "H100:8")], want(["H100", "A100-80GB"]), "h100", (0,)),
    Case("first choice full: the fallback", [node("a100", "A100-80GB:8"), node("h100", "H100:8", used=8)], want(["H100", "A100-80GB:2"]), "a100", (0, 1)),
    Case("each fallback has its own count", [node("h100", "H100:8", used=7), node("a100", "A100-80GB:2")], want(["H100:2", "A100-80GB:2"]), "a100", (0, 1)),
    Case("A10 is not an A100", [node("a100", "A100-80GB:8")], want("A10"), "raise"),
    Case("L4 is not an L40S", [node("l40s", "L40S:8")], want("L4"), "raise"),
    Case("A100 takes either size", [node("a100", "A100-40GB:1")], want("A100"), "a100", (0,)),
    Case("A100-80GB refuses 40GB", [node("small", "A100-40GB:8"), node("big", "A100-80GB:1")], want("A100-80GB"), "big", (0,)),
    Case("any takes any model", [node("t4", "T4:1")], want("any"), "t4", (0,)),
    Case("one container gets one model", [node("mixed", "H100:1,A100-80GB:1")], want("any:2"), "raise"),
    Case("mixed node: the matching model's devices", [node("mixed", "T4:2,H100:2")], want("H100:2"), "mixed", (2, 3)),
    Case("GPU node without the cpu: wait", [node("a", "H100:8", cpu=8, cpu_used=7.5)], want("H100", cpu=1), None),
    Case("GPU fits but memory never does", [node("a", "H100:8", memory=1024)], want("H100", memory=4096), "raise"),
    Case("MIG devices are not placed whole", [node("a", "A100-80GB:2", mig=(0,))], want("A100-80GB"), "a", (1,)),
    Case("all MIG: never", [node("a", "A100-80GB:1", mig=(0,))], want("A100-80GB"), "raise"),
    Case("snapshot holder among equals", [node("a", "H100:8"), node("b", "H100:8", keys=frozenset({"k"}))], want("H100"), "b", (0,), "k"),
    Case("best fit before the snapshot", [node("a", "H100:8", used=4), node("b", "H100:8", keys=frozenset({"k"}))], want("H100"), "a", (4,), "k"),
    Case("cpu-only snapshot holder", [node("a", cpu=4, cpu_used=3), node("b", cpu=16, keys=frozenset({"k"}))], want(), "b", (), "k"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_placement_table(case: Case) -> None:
    if case.node == "raise":
        with pytest.raises(Unplaceable):
            choose_node(case.nodes, case.request, case.key)
        return
    placement = choose_node(case.nodes, case.request, case.key)
    if case.node is None:
        assert placement is None
        return
    assert placement is not None and placement.node_id == case.node
    assert placement.gpu_indices == case.gpus
    assert placement.gpu_uuids == tuple(f"GPU-{case.node}-{i}" for i in case.gpus)


def test_the_explanation_says_what_each_kind_of_node_offers() -> None:
    nodes = [node("cpu-only", cpu=2, memory=4096), *(node(f"h{i}", "H100:8") for i in range(5))]
    nodes[1].simulated = True
    with pytest.raises(Unplaceable) as err:
        choose_node(nodes, want(["A100:2", "L40S:2"]))
    message = str(err.value)
    assert "needs cpu=1, memory=1024 MiB, gpu=A100:2 or L40S:2" in message
    assert "cpu-only: cpu=2, memory=4096 MiB, gpus=[none]" in message
    assert "h0: cpu=64, memory=524288 MiB, gpus=[8x NVIDIA H100 80GB HBM3] (simulated)" in message
    assert "4 nodes (h1, h2, h3, ...): cpu=64, memory=524288 MiB, gpus=[8x NVIDIA H100 80GB HBM3]" in message
    with pytest.raises(Unplaceable, match="no runtime node is connected"):
        choose_node([], want())


def test_reservations_move_nodes_between_levels_and_back() -> None:
    cluster = Cluster()
    a, b = node("a", "H100:8"), node("b", "H100:8")
    cluster.add(a)
    cluster.add(b)
    placements = []
    for _ in range(8):
        p = cluster.place(want("H100"))
        assert p is not None
        cluster.reserve(cluster.nodes[p.node_id].capacity, 1, 1024, p.gpu_uuids)
        placements.append(p)
    assert {p.node_id for p in placements} == {"a"}  # best fit keeps b whole
    eight = cluster.place(want("H100:8"))
    assert eight is not None and eight.node_id == "b"
    cluster.release(a, 1, 1024, placements[3].gpu_uuids)
    again = cluster.place(want("H100"))
    assert again == Placement("a", (3,), ("GPU-a-3",), "H100:1")


def test_a_heartbeat_that_loses_a_device_stops_placing_it() -> None:
    cluster = Cluster()
    a = node("a", "H100:2")
    cluster.add(a)
    cluster.update_gpus(a, list(a.gpus[:1]))
    with pytest.raises(Unplaceable):
        cluster.place(want("H100:2"))
    assert cluster.place(want("H100")) == Placement("a", (0,), ("GPU-a-0",), "H100:1")


def test_snapshot_keys_set_after_joining_are_indexed() -> None:
    cluster = Cluster()
    a, b = node("a", cpu=4, cpu_used=3), node("b", cpu=16)
    cluster.add(a)
    cluster.add(b)
    assert cluster.place(want(), "k") == Placement("a")
    b.snapshot_keys = {"k"}
    assert cluster.place(want(), "k") == Placement("b")
    b.snapshot_keys = set()
    assert cluster.place(want(), "k") == Placement("a")


# The property: whatever happens, no node is over-committed, no GPU is held twice, and the
# cluster places exactly when a brute-force search finds room. -----------------------------------

MODELS = ["H100", "A100-80GB", "L4"]
REQUESTS = [None, "H100", "H100:2", "H100:4", "H100:8", "A100-80GB:2", ["H100:2", "A100-80GB:2"], "any", "any:4", "L4"]


@st.composite
def clusters(draw: st.DrawFn) -> list[NodeCapacity]:
    nodes = []
    for i in range(draw(st.integers(1, 6))):
        spec = draw(st.sampled_from(["", "H100:8", "H100:4", "A100-80GB:8", "L4:2", "H100:2,L4:2"]))
        nodes.append(node(f"n{i}", spec, cpu=draw(st.sampled_from([4, 8, 32])), memory=draw(st.sampled_from([8192, 65536]))))
    return nodes


def _fits_somewhere(nodes: list[NodeCapacity], request: common_pb2.Resources) -> bool:
    choices = gpu_names.request_choices(request.gpu) if request.HasField("gpu") else []
    for n in nodes:
        if not n.fits(request.cpu, int(request.memory_mib)):
            continue
        if not choices:
            return True
        free = [g.model for g in n.placeable() if g.uuid not in n.gpus_in_use]
        if any(sum(gpu_names.matches(name, m) and m == model for m in free) >= count
               for name, count in choices for model in set(free)):
            return True
    return False


@settings(max_examples=200, deadline=None)
@given(clusters(), st.lists(st.tuples(st.booleans(), st.sampled_from(REQUESTS), st.sampled_from([0.5, 1, 4]), st.sampled_from([512, 4096])), max_size=60))
def test_placement_never_over_commits_a_node(nodes: list[NodeCapacity], steps: list[tuple[bool, object, float, int]]) -> None:
    cluster = Cluster()
    for n in nodes:
        cluster.add(n)
    held: list[tuple[NodeCapacity, float, int, tuple[str, ...]]] = []
    for release, gpu, cpu, memory in steps:
        if release and held:
            n, c, m, uuids = held.pop(0)
            cluster.release(n, c, m, uuids)
            continue
        request = want(gpu, cpu, memory)  # type: ignore[arg-type]
        try:
            placement = cluster.place(request)
        except Unplaceable:
            assert not any(_fits_somewhere([_idle(n)], request) for n in nodes)
            continue
        assert (placement is not None) == _fits_somewhere(nodes, request)
        if placement is None:
            continue
        target = cluster.nodes[placement.node_id].capacity
        assert len(set(placement.gpu_uuids)) == len(placement.gpu_uuids)
        assert not set(placement.gpu_uuids) & target.gpus_in_use
        assert {d.uuid: d.index for d in target.gpus if d.uuid in placement.gpu_uuids} == dict(zip(placement.gpu_uuids, placement.gpu_indices, strict=True))
        assert len({d.model for d in target.gpus if d.uuid in placement.gpu_uuids}) <= 1
        cluster.reserve(target, cpu, memory, placement.gpu_uuids)
        held.append((target, cpu, memory, placement.gpu_uuids))
        for n in nodes:
            assert n.cpu_reserved <= n.cpu + 1e-9 and n.memory_reserved_mib <= n.memory_mib
        all_held = [u for _, _, _, uuids in held for u in uuids]
        assert len(all_held) == len(set(all_held))


def _idle(n: NodeCapacity) -> NodeCapacity:
    return NodeCapacity(n.node_id, n.cpu, n.memory_mib, n.gpus)
