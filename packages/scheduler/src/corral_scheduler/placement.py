"""Placement: which node runs a new container. Pure functions over node capacity, unit-tested."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from corral_protocol.v1 import common_pb2


@dataclass
class NodeCapacity:
    node_id: str
    cpu: float
    memory_mib: int
    gpus: list[common_pb2.GpuDevice] = field(default_factory=list)
    cpu_reserved: float = 0.0
    memory_reserved_mib: int = 0
    gpus_in_use: set[int] = field(default_factory=set)
    snapshot_keys: set[str] = field(default_factory=set)

    def free_gpus(self, model: str) -> list[int]:
        return [g.index for g in self.gpus if g.index not in self.gpus_in_use and gpu_matches(g.model, model)]


@dataclass(frozen=True)
class Placement:
    node_id: str
    gpu_indices: tuple[int, ...] = ()


class Unplaceable(Exception):
    """No node could ever run this request, however idle the cluster."""


def gpu_matches(device_model: str, wanted: str) -> bool:
    if wanted == "any":
        return True
    normalized = device_model.upper().replace("NVIDIA", "").replace(" ", "-").strip("-")
    return wanted.upper() in normalized


def _fits(node: NodeCapacity, resources: common_pb2.Resources, idle: bool) -> tuple[int, ...] | None:
    reserved_cpu = 0.0 if idle else node.cpu_reserved
    reserved_mem = 0 if idle else node.memory_reserved_mib
    if reserved_cpu + resources.cpu > node.cpu + 1e-9 or reserved_mem + resources.memory_mib > node.memory_mib:
        return None
    if not resources.HasField("gpu") or resources.gpu.count == 0:
        return ()
    for model in resources.gpu.models:
        candidates = [g.index for g in node.gpus if gpu_matches(g.model, model)]
        free = candidates if idle else node.free_gpus(model)
        if len(free) >= resources.gpu.count:
            return tuple(sorted(free)[: resources.gpu.count])
    return None


def choose_node(nodes: Sequence[NodeCapacity], resources: common_pb2.Resources, snapshot_key: str = "") -> Placement | None:
    """Best fit: the node that holds the snapshot first, then the one left with the least free CPU.

    Returns None when every capable node is busy; raises `Unplaceable` when no node could ever fit.
    """
    best: tuple[tuple[bool, float, int], Placement] | None = None
    for node in nodes:
        gpus = _fits(node, resources, idle=False)
        if gpus is None:
            continue
        key = (snapshot_key not in node.snapshot_keys if snapshot_key else True,
               node.cpu - node.cpu_reserved - resources.cpu,
               node.memory_mib - node.memory_reserved_mib)
        if best is None or key < best[0]:
            best = (key, Placement(node.node_id, gpus))
    if best is not None:
        return best[1]
    if not any(_fits(node, resources, idle=True) is not None for node in nodes):
        raise Unplaceable(describe_shortfall(nodes, resources))
    return None


def describe_shortfall(nodes: Sequence[NodeCapacity], resources: common_pb2.Resources) -> str:
    wanted = f"cpu={resources.cpu:g}, memory={resources.memory_mib} MiB"
    if resources.HasField("gpu") and resources.gpu.count:
        wanted += f", gpu={'|'.join(resources.gpu.models)}:{resources.gpu.count}"
    if not nodes:
        return f"no runtime node is connected (needs {wanted})"
    offers = "; ".join(
        f"{n.node_id}: cpu={n.cpu:g}, memory={n.memory_mib} MiB, gpus=[{', '.join(g.model for g in n.gpus) or 'none'}]"
        for n in nodes
    )
    return f"no node can ever run a container that needs {wanted}; nodes offer: {offers}"
