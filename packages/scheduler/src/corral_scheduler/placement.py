"""Placement: which node runs a new container, and which of its GPUs. Pure, unit-tested.

Filter, then score (issue 12):
  1. a node must have the CPU, the memory and, for one of the request's GPU fallbacks, that many
     free devices of one NVML model the fallback accepts (`corral_protocol.gpus`);
  2. the earliest fallback that fits anywhere wins;
  3. among its nodes, the one left with the fewest free GPUs (best fit: 1-GPU containers fill
     partly used nodes and whole free nodes stay whole for 8-GPU ones; CPU-only containers go to
     nodes with no free GPU first);
  4. then a node that holds the service's snapshot image; then the tightest CPU (then memory)
     fit among the first few nodes of that level that fit.

`Cluster` keeps connected nodes in buckets by free GPU count per model, so a placement looks at
a handful of buckets, not every node: 1,000 nodes place well over 5,000 containers a second
(`tools/bench/placement.py`). A request no node could ever run (even idle) raises `Unplaceable`
with what each node offers; one that fits once capacity frees up gets None and waits.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from corral_protocol import gpus as gpu_names
from corral_protocol.v1 import common_pb2

BEST_FIT_WINDOW = 16
"""Nodes of one free-GPU level compared for the tightest CPU fit (the first that fit)."""
ALL_GPUS = ""
"""The bucket key of a node's free GPUs of every model (where CPU-only containers are placed)."""


class NodeCapacity:
    """One node's resources and what its containers hold. The node's own accounting; a `Cluster`
    indexes the connected ones."""

    def __init__(self, node_id: str, cpu: float, memory_mib: int, gpus: list[common_pb2.GpuDevice] | None = None,
                 name: str = "", simulated: bool = False) -> None:
        self.node_id = node_id
        self.name = name or node_id
        self.cpu = cpu
        self.memory_mib = memory_mib
        self.gpus: list[common_pb2.GpuDevice] = list(gpus or ())
        self.simulated = simulated
        self.cpu_reserved = 0.0
        self.memory_reserved_mib = 0
        self.gpus_in_use: set[str] = set()  # UUIDs
        self._snapshot_keys: set[str] = set()
        self._cluster: Cluster | None = None

    @property
    def snapshot_keys(self) -> set[str]:
        """Keys of the snapshot images this node holds (set as a whole by the snapshot book)."""
        return self._snapshot_keys

    @snapshot_keys.setter
    def snapshot_keys(self, keys: set[str]) -> None:
        if self._cluster is not None:
            self._cluster.keys_changed(self, self._snapshot_keys, keys)
        self._snapshot_keys = set(keys)

    def placeable(self) -> list[common_pb2.GpuDevice]:
        """Devices a container may be given whole: not split into MIG instances."""
        return [g for g in self.gpus if g.mig_mode != common_pb2.GPU_MIG_MODE_ENABLED]

    def free_counts(self) -> dict[str, int]:
        """Free placeable GPUs per NVML model, and of every model under `ALL_GPUS`."""
        counts = Counter(g.model for g in self.placeable() if g.uuid not in self.gpus_in_use)
        out = {model: counts.get(model, 0) for model in {g.model for g in self.placeable()}}
        out[ALL_GPUS] = sum(counts.values())
        return out

    def fits(self, cpu: float, memory_mib: int) -> bool:
        return self.cpu_reserved + cpu <= self.cpu + 1e-9 and self.memory_reserved_mib + memory_mib <= self.memory_mib

    def offer(self) -> str:
        """What this node offers, for messages."""
        models = Counter(g.model + (" (MIG)" if g.mig_mode == common_pb2.GPU_MIG_MODE_ENABLED else "") for g in self.gpus)
        gpus = ", ".join(f"{n}x {model}" for model, n in sorted(models.items())) or "none"
        return f"cpu={self.cpu:g}, memory={self.memory_mib} MiB, gpus=[{gpus}]" + (" (simulated)" if self.simulated and self.gpus else "")


@dataclass(frozen=True)
class Placement:
    node_id: str
    gpu_indices: tuple[int, ...] = ()
    gpu_uuids: tuple[str, ...] = ()
    choice: str = ""
    """The fallback that was taken, e.g. "H100:2" (empty for CPU-only)."""


class Unplaceable(Exception):
    """No node could ever run this request, however idle the cluster."""


@dataclass
class _Indexed:
    capacity: NodeCapacity
    free: dict[str, int] = field(default_factory=dict)  # model (or ALL_GPUS) -> free count, as bucketed


class Cluster:
    """The connected nodes, indexed for placement. Reservations go through `reserve`/`release` so
    the buckets stay in step with each node's accounting."""

    def __init__(self) -> None:
        self.nodes: dict[str, _Indexed] = {}
        # model -> free count -> node ids (a dict keeps the order nodes arrived in the bucket)
        self._buckets: dict[str, dict[int, dict[str, None]]] = {ALL_GPUS: {}}
        self._max_free = 0
        self._accepted: dict[str, list[str]] = {}  # request name -> models present that it accepts
        self._holders: dict[str, set[str]] = {}  # snapshot key -> node ids
        # (choices, cpu, memory) -> whether some node could run it idle; cleared when nodes change
        self._ever: dict[tuple[tuple[tuple[str, int], ...], float, int], bool] = {}

    def __len__(self) -> int:
        return len(self.nodes)

    def capacities(self) -> list[NodeCapacity]:
        return [entry.capacity for entry in self.nodes.values()]

    # Membership -------------------------------------------------------------------------------

    def add(self, capacity: NodeCapacity) -> None:
        self.remove(capacity.node_id)
        self._ever.clear()
        entry = _Indexed(capacity)
        self.nodes[capacity.node_id] = entry
        capacity._cluster = self
        for key in capacity.snapshot_keys:
            self._holders.setdefault(key, set()).add(capacity.node_id)
        if any(g.model not in self._buckets for g in capacity.gpus):
            self._accepted.clear()
        self._rebucket(entry)

    def remove(self, node_id: str) -> None:
        entry = self.nodes.pop(node_id, None)
        if entry is None:
            return
        self._ever.clear()
        for model, count in entry.free.items():
            self._buckets[model][count].pop(node_id, None)
        for key in entry.capacity.snapshot_keys:
            self._holders.get(key, set()).discard(node_id)
        entry.capacity._cluster = None

    def update_gpus(self, capacity: NodeCapacity, gpus: list[common_pb2.GpuDevice]) -> None:
        """A refreshed GPU reading (heartbeat). Devices in use stay in use until released."""
        before = [(g.uuid, g.model, g.mig_mode) for g in capacity.gpus]
        capacity.gpus = list(gpus)
        if before != [(g.uuid, g.model, g.mig_mode) for g in gpus] and capacity.node_id in self.nodes:
            self.add(capacity)

    def keys_changed(self, capacity: NodeCapacity, old: set[str], new: set[str]) -> None:
        for key in old - new:
            self._holders.get(key, set()).discard(capacity.node_id)
        for key in new - old:
            self._holders.setdefault(key, set()).add(capacity.node_id)

    # Reservations -----------------------------------------------------------------------------

    def reserve(self, capacity: NodeCapacity, cpu: float, memory_mib: int, gpu_uuids: tuple[str, ...]) -> None:
        capacity.cpu_reserved += cpu
        capacity.memory_reserved_mib += memory_mib
        capacity.gpus_in_use.update(gpu_uuids)
        self._refresh(capacity, bool(gpu_uuids))

    def release(self, capacity: NodeCapacity, cpu: float, memory_mib: int, gpu_uuids: tuple[str, ...]) -> None:
        capacity.cpu_reserved = max(0.0, capacity.cpu_reserved - cpu)
        capacity.memory_reserved_mib = max(0, capacity.memory_reserved_mib - memory_mib)
        capacity.gpus_in_use.difference_update(gpu_uuids)
        self._refresh(capacity, bool(gpu_uuids))

    def _refresh(self, capacity: NodeCapacity, gpus_changed: bool) -> None:
        entry = self.nodes.get(capacity.node_id)
        if entry is not None and gpus_changed:
            self._rebucket(entry)

    def _rebucket(self, entry: _Indexed) -> None:
        node_id = entry.capacity.node_id
        free = entry.capacity.free_counts()
        for model, count in entry.free.items():
            if free.get(model) != count:
                self._buckets[model][count].pop(node_id, None)
        for model, count in free.items():
            if entry.free.get(model) != count:
                self._buckets.setdefault(model, {}).setdefault(count, {})[node_id] = None
                self._max_free = max(self._max_free, count)
        entry.free = free

    # Placement --------------------------------------------------------------------------------

    def place(self, resources: common_pb2.Resources, snapshot_key: str = "") -> Placement | None:
        """Where a container with these resources runs now; None when it must wait for capacity.

        Raises `Unplaceable` when no connected node could run it even idle."""
        choices = gpu_names.request_choices(resources.gpu) if resources.HasField("gpu") else []
        cpu, memory = resources.cpu, int(resources.memory_mib)
        holders = self._holders.get(snapshot_key, set()) if snapshot_key else set()
        if not choices:
            found = self._best([ALL_GPUS], 0, cpu, memory, holders)
            if found is not None:
                return Placement(found[0])
        for name, count in choices:
            found = self._best(self._models(name), count, cpu, memory, holders)
            if found is not None:
                node_id, model = found
                devices = self._pick(self.nodes[node_id].capacity, model, count)
                return Placement(node_id, tuple(g.index for g in devices), tuple(g.uuid for g in devices), f"{name}:{count}")
        key = (tuple(choices), cpu, memory)
        ever = self._ever.get(key)
        if ever is None:
            ever = self._ever[key] = any(self._could_ever_run(e.capacity, choices, cpu, memory) for e in self.nodes.values())
        if not ever:
            raise Unplaceable(describe_shortfall(self.capacities(), resources))
        return None

    def _models(self, name: str) -> list[str]:
        models = self._accepted.get(name)
        if models is None:
            models = [m for m in self._buckets if m != ALL_GPUS and gpu_names.matches(name, m)]
            self._accepted[name] = models
        return models

    def _best(self, models: list[str], count: int, cpu: float, memory: int, holders: set[str]) -> tuple[str, str] | None:
        """The node with the fewest free GPUs of one accepted model (at least `count`) that has the
        CPU and memory: a snapshot holder first among equals, else the tightest CPU (then memory)
        fit among the first `BEST_FIT_WINDOW` nodes that fit, so a level of a thousand alike
        nodes is not scanned whole."""
        for level in range(count, self._max_free + 1):
            buckets = [(model, bucket) for model in models if (bucket := self._buckets[model].get(level))]
            if not buckets:
                continue
            for node_id in holders:
                for model, bucket in buckets:
                    if node_id in bucket and self.nodes[node_id].capacity.fits(cpu, memory):
                        return node_id, model
            best: tuple[float, int, str, str] | None = None
            seen = 0
            for model, bucket in buckets:
                for node_id in bucket:
                    node = self.nodes[node_id].capacity
                    if not node.fits(cpu, memory):
                        continue
                    key = (node.cpu - node.cpu_reserved, node.memory_mib - node.memory_reserved_mib, node_id, model)
                    if best is None or key[:2] < best[:2]:
                        best = key
                    seen += 1
                    if seen >= BEST_FIT_WINDOW:
                        return best[2], best[3]
            if best is not None:
                return best[2], best[3]
        return None

    @staticmethod
    def _pick(capacity: NodeCapacity, model: str, count: int) -> list[common_pb2.GpuDevice]:
        free = [g for g in capacity.placeable() if g.model == model and g.uuid not in capacity.gpus_in_use]
        return sorted(free, key=lambda g: g.index)[:count]

    @staticmethod
    def _could_ever_run(capacity: NodeCapacity, choices: list[tuple[str, int]], cpu: float, memory: int) -> bool:
        if cpu > capacity.cpu + 1e-9 or memory > capacity.memory_mib:
            return False
        if not choices:
            return True
        per_model = Counter(g.model for g in capacity.placeable())
        return any(n >= count and gpu_names.matches(name, model) for name, count in choices for model, n in per_model.items())


def could_ever_run(capacity: NodeCapacity, resources: common_pb2.Resources) -> bool:
    """Whether the node could run a container with these resources once idle (whatever holds it now)."""
    choices = gpu_names.request_choices(resources.gpu) if resources.HasField("gpu") else []
    return Cluster._could_ever_run(capacity, choices, resources.cpu, int(resources.memory_mib))


def choose_node(nodes: list[NodeCapacity], resources: common_pb2.Resources, snapshot_key: str = "") -> Placement | None:
    """`Cluster.place` over these nodes, indexed for this one call (tests and one-off answers)."""
    cluster = Cluster()
    for node in nodes:
        cluster.add(node)
    try:
        return cluster.place(resources, snapshot_key)
    finally:
        for node in nodes:
            cluster.remove(node.node_id)


MAX_OFFERS_LISTED = 8


def describe_shortfall(nodes: list[NodeCapacity], resources: common_pb2.Resources) -> str:
    """Why no node can ever run `resources`: what it needs, and what the nodes offer (identical
    offers grouped, so a thousand alike nodes make one line)."""
    wanted = f"cpu={resources.cpu:g}, memory={resources.memory_mib} MiB"
    if resources.HasField("gpu") and gpu_names.request_choices(resources.gpu):
        wanted += f", gpu={gpu_names.describe_request(resources.gpu)}"
    if not nodes:
        return f"no runtime node is connected (needs {wanted})"
    groups: dict[str, list[str]] = {}
    for node in nodes:
        groups.setdefault(node.offer(), []).append(node.name)
    lines = []
    for offer, names in list(groups.items())[:MAX_OFFERS_LISTED]:
        who = names[0] if len(names) == 1 else f"{len(names)} nodes ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
        lines.append(f"{who}: {offer}")
    if len(groups) > MAX_OFFERS_LISTED:
        lines.append(f"and {len(groups) - MAX_OFFERS_LISTED} more kinds of node")
    return f"no node can ever run a container that needs {wanted}; nodes offer: " + "; ".join(lines)
