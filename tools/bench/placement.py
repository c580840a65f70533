"""Placement benchmark: Corral's `Cluster.place` on 1,000 simulated nodes with 8 H100s each.

    .venv/bin/python tools/bench/placement.py [--nodes 1000] [--rounds 5] [--seed 1]

A stream of requests (a realistic mix: 1-, 2-, 4- and 8-GPU containers, some with a fallback list,
and CPU-only ones, each with CPU and memory in proportion) is placed until the first request that
does not fit. It reports, each measured in this run:

- placements per second of Corral's placement (place + reserve, the control plane's whole cost),
  filling the cluster, and at steady state (a container leaves, the next request is placed);
- GPU utilisation at the first rejection for Corral (requests in arrival order, as the control
  plane sees them) against first-fit (the same order) and first-fit-decreasing (FFD: the same
  requests sorted by size first, which only an offline packer can do), and Corral's placement fed
  the same sorted list (best-fit-decreasing), so each pair compares like with like.

The baselines are written here, plainly, over the same nodes and the same GPU name table.
Pure Python, no cluster: it measures the placement code, not the network.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for package in ("protocol", "scheduler"):
    sys.path.insert(0, str(ROOT / "packages" / package / "src"))

from corral_protocol import gpus as gpu_names  # noqa: E402
from corral_protocol.v1 import common_pb2  # noqa: E402
from corral_scheduler.placement import Cluster, NodeCapacity, Unplaceable  # noqa: E402

NODE_CPU = 224.0  # an 8-GPU H100 server: 2 x 56 cores, 2 threads each, and 2 TiB
NODE_MEMORY_MIB = 2 * 1024 * 1024
GPUS_PER_NODE = 8
MODEL = gpu_names.REQUEST_NAMES["H100"]

# (weight, GPU request, cpu per GPU or per container, memory GiB per GPU or per container)
MIX: list[tuple[float, object, tuple[float, float], tuple[int, int]]] = [
    (0.30, "H100", (8, 24), (64, 200)),
    (0.08, ["H200", "H100"], (8, 24), (64, 200)),  # a fallback: no H200 here, so the second choice
    (0.04, "any", (4, 16), (32, 128)),
    (0.16, "H100:2", (8, 24), (64, 200)),
    (0.10, "H100:4", (8, 24), (64, 200)),
    (0.07, "H100:8", (12, 26), (96, 240)),
    (0.25, None, (2, 32), (4, 128)),  # CPU-only: data loaders, API servers, preprocessing
]


@dataclass(frozen=True)
class Request:
    resources: common_pb2.Resources
    gpus: int  # the first choice's count (0: CPU-only)


def make_requests(rng: random.Random, total_gpus: int) -> list[Request]:
    """Requests until their GPU demand is 1.5 times the cluster's GPUs."""
    weights = [m[0] for m in MIX]
    out: list[Request] = []
    demand = 0
    while demand < 1.5 * total_gpus:
        _, gpu, (cpu_lo, cpu_hi), (mem_lo, mem_hi) = rng.choices(MIX, weights)[0]
        res = common_pb2.Resources()
        count = 0
        if gpu is not None:
            res.gpu.CopyFrom(gpu_names.parse_request(gpu))  # type: ignore[arg-type]
            count = gpu_names.request_choices(res.gpu)[-1][1]
        scale = max(count, 1)
        res.cpu = rng.randint(int(cpu_lo), int(cpu_hi)) * scale
        res.memory_mib = rng.randint(mem_lo, mem_hi) * 1024 * scale
        out.append(Request(res, count))
        demand += count
    return out


def make_nodes(n: int) -> list[NodeCapacity]:
    nodes = []
    for i in range(n):
        gpus = [common_pb2.GpuDevice(index=g, uuid=f"GPU-{i:04d}-{g}", model=MODEL.nvml_name, memory_mib=MODEL.simulated_memory_mib)
                for g in range(GPUS_PER_NODE)]
        nodes.append(NodeCapacity(f"node-{i:04d}", NODE_CPU, NODE_MEMORY_MIB, gpus, simulated=True))
    return nodes


def utilisation(nodes: list[NodeCapacity]) -> float:
    return sum(len(n.gpus_in_use) for n in nodes) / sum(len(n.gpus) for n in nodes)


# Corral ---------------------------------------------------------------------------------------

def corral_fill(n_nodes: int, requests: list[Request]) -> tuple[float, int, float, Cluster, list[tuple[NodeCapacity, Request, tuple[str, ...]]]]:
    """(utilisation at the first rejection, placements, seconds spent placing, cluster, held)."""
    nodes = make_nodes(n_nodes)
    cluster = Cluster()
    for node in nodes:
        cluster.add(node)
    held = []
    start = time.perf_counter()
    for request in requests:
        try:
            placement = cluster.place(request.resources)
        except Unplaceable:
            placement = None
        if placement is None:
            break
        node = cluster.nodes[placement.node_id].capacity
        cluster.reserve(node, request.resources.cpu, int(request.resources.memory_mib), placement.gpu_uuids)
        held.append((node, request, placement.gpu_uuids))
    elapsed = time.perf_counter() - start
    return utilisation(nodes), len(held), elapsed, cluster, held


def corral_churn(cluster: Cluster, held: list[tuple[NodeCapacity, Request, tuple[str, ...]]], requests: list[Request],
                 rng: random.Random, steps: int) -> tuple[int, int, float]:
    """At full load: a random container leaves, the next request is placed (or waits, and the next
    one is tried). Returns (placements, waits, seconds)."""
    placed = waits = 0
    start = time.perf_counter()
    for step in range(steps):
        node, old, uuids = held.pop(rng.randrange(len(held)))
        cluster.release(node, old.resources.cpu, int(old.resources.memory_mib), uuids)
        request = requests[step % len(requests)]
        placement = cluster.place(request.resources)
        if placement is None:
            waits += 1
            continue
        target = cluster.nodes[placement.node_id].capacity
        cluster.reserve(target, request.resources.cpu, int(request.resources.memory_mib), placement.gpu_uuids)
        held.append((target, request, placement.gpu_uuids))
        placed += 1
    return placed, waits, time.perf_counter() - start


def corral_churn_quality(n_nodes: int, requests: list[Request], rng: random.Random, steps: int) -> tuple[float, float]:
    """`churn_quality` under Corral's placement."""
    util, placed, _, cluster, held = corral_fill(n_nodes, requests)
    nodes = cluster.capacities()

    def place(request: Request) -> tuple[NodeCapacity, Request, tuple[str, ...]] | None:
        try:
            placement = cluster.place(request.resources)
        except Unplaceable:
            placement = None
        if placement is None:
            return None
        node = cluster.nodes[placement.node_id].capacity
        cluster.reserve(node, request.resources.cpu, int(request.resources.memory_mib), placement.gpu_uuids)
        return node, request, placement.gpu_uuids

    def release(item: tuple[NodeCapacity, Request, tuple[str, ...]]) -> None:
        node, old, uuids = item
        cluster.release(node, old.resources.cpu, int(old.resources.memory_mib), uuids)

    return churn_quality(nodes, held, requests[placed:] + requests[:placed], rng, steps, place, release)


# Baselines: first fit over the nodes in a fixed order --------------------------------------------

def first_fit(n_nodes: int, requests: list[Request]) -> tuple[float, int]:
    nodes = make_nodes(n_nodes)
    placed = 0
    for request in requests:
        if _first_fit_one(nodes, request.resources) is None:
            break
        placed += 1
    return utilisation(nodes), placed


def _first_fit_one(nodes: list[NodeCapacity], res: common_pb2.Resources) -> tuple[NodeCapacity, tuple[str, ...]] | None:
    choices = gpu_names.request_choices(res.gpu) if res.HasField("gpu") else [("", 0)]
    for name, count in choices:
        for node in nodes:
            if not node.fits(res.cpu, int(res.memory_mib)):
                continue
            free = [g for g in node.gpus if g.uuid not in node.gpus_in_use and (not name or gpu_names.matches(name, g.model))]
            if len(free) >= count:
                node.cpu_reserved += res.cpu
                node.memory_reserved_mib += int(res.memory_mib)
                uuids = tuple(g.uuid for g in free[:count])
                node.gpus_in_use.update(uuids)
                return node, uuids
    return None


def first_fit_churn(n_nodes: int, requests: list[Request], rng: random.Random, steps: int) -> tuple[float, float]:
    """The churn of `corral_churn` under first-fit; see `churn_quality`."""
    nodes = make_nodes(n_nodes)
    held: list[tuple[NodeCapacity, Request, tuple[str, ...]]] = []
    index = 0
    def place(request: Request) -> tuple[NodeCapacity, Request, tuple[str, ...]] | None:
        found = _first_fit_one(nodes, request.resources)
        return (found[0], request, found[1]) if found is not None else None

    while (item := place(requests[index % len(requests)])) is not None:  # fill
        held.append(item)
        index += 1

    def release(item: tuple[NodeCapacity, Request, tuple[str, ...]]) -> None:
        node, old, uuids = item
        node.cpu_reserved -= old.resources.cpu
        node.memory_reserved_mib -= int(old.resources.memory_mib)
        node.gpus_in_use.difference_update(uuids)

    return churn_quality(nodes, held, requests[index:] + requests[:index], rng, steps, place, release)


def churn_quality(nodes: list[NodeCapacity], held: list[tuple[NodeCapacity, Request, tuple[str, ...]]], requests: list[Request],
                  rng: random.Random, steps: int,
                  place: Callable[[Request], tuple[NodeCapacity, Request, tuple[str, ...]] | None],
                  release: Callable[[tuple[NodeCapacity, Request, tuple[str, ...]]], None]) -> tuple[float, float]:
    """A full cluster under churn: a random container leaves, then requests are placed until one
    must wait (a rejection). Returns (mean GPU utilisation at a rejection, share of rejected
    multi-GPU requests that the cluster had enough free GPUs for, on no single node: fragmentation)."""
    total = sum(len(n.gpus) for n in nodes)
    at_rejection: list[float] = []
    stranded = multi = 0
    index = 0
    for _ in range(steps):
        release(held.pop(rng.randrange(len(held))))
        while True:
            request = requests[index % len(requests)]
            item = place(request)
            if item is None:
                used = sum(len(n.gpus_in_use) for n in nodes)
                at_rejection.append(used / total)
                if request.gpus > 1:
                    multi += 1
                    stranded += total - used >= request.gpus
                break
            held.append(item)
            index += 1
    return statistics.fmean(at_rejection), stranded / max(multi, 1)


def decreasing(requests: list[Request]) -> list[Request]:
    """Largest first: GPUs, then CPU, then memory (what FFD sorts by)."""
    return sorted(requests, key=lambda r: (r.gpus, r.resources.cpu, r.resources.memory_mib), reverse=True)


def timed(fn: Callable[[int, list[Request]], tuple[float, int]], n_nodes: int, requests: list[Request]) -> tuple[float, int, float]:
    start = time.perf_counter()
    util, placed = fn(n_nodes, requests)
    return util, placed, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="request streams, each with its own seed")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--churn", type=int, default=20000, help="steady-state steps per round (speed)")
    parser.add_argument("--churn-quality", type=int, default=2000, help="churn steps per round comparing fragmentation")
    args = parser.parse_args()

    rows = []
    for round_no in range(args.rounds):
        rng = random.Random(args.seed + round_no)
        requests = make_requests(rng, args.nodes * GPUS_PER_NODE)
        util, placed, seconds, cluster, held = corral_fill(args.nodes, requests)
        churn_placed, churn_waits, churn_seconds = corral_churn(cluster, held, requests[placed:] + requests[:placed], rng, args.churn)
        bfd_util, bfd_placed, _, _, _ = corral_fill(args.nodes, decreasing(requests))
        ff_util, ff_placed, ff_seconds = timed(first_fit, args.nodes, requests)
        ffd_util, ffd_placed, _ = timed(first_fit, args.nodes, decreasing(requests))
        q_util, q_stranded = corral_churn_quality(args.nodes, requests, random.Random(args.seed + 100 + round_no), args.churn_quality)
        qf_util, qf_stranded = first_fit_churn(args.nodes, requests, random.Random(args.seed + 100 + round_no), args.churn_quality)
        rows.append({
            "fill_rate": placed / seconds, "churn_rate": churn_placed / churn_seconds, "churn_waits": churn_waits / args.churn,
            "util": util, "placed": placed, "ff_util": ff_util, "ff_placed": ff_placed, "ff_rate": ff_placed / ff_seconds,
            "bfd_util": bfd_util, "ffd_util": ffd_util,
            "q_util": q_util, "q_stranded": q_stranded, "qf_util": qf_util, "qf_stranded": qf_stranded,
        })
        r = rows[-1]
        print(f"round {round_no + 1}: {len(requests)} requests; corral placed {placed} in {seconds * 1000:.0f} ms "
              f"({r['fill_rate']:,.0f}/s filling, {r['churn_rate']:,.0f}/s at steady state); GPU utilisation at the first "
              f"rejection: corral {util:.2%}, first-fit {ff_util:.2%}, corral on the sorted list {bfd_util:.2%}, FFD {ffd_util:.2%}; "
              f"under churn: corral {q_util:.2%} ({q_stranded:.0%} of multi-GPU waits fragmentation), "
              f"first-fit {qf_util:.2%} ({qf_stranded:.0%})")

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    print()
    print(f"{args.nodes} nodes x {GPUS_PER_NODE} H100, {args.rounds} rounds, medians:")
    print(f"  placements/s (corral): {med('fill_rate'):,.0f} filling an empty cluster, {med('churn_rate'):,.0f} at steady "
          f"state ({med('churn_waits'):.0%} of requests waiting there); first-fit baseline {med('ff_rate'):,.0f}/s")
    print("  GPU utilisation at the first rejection:")
    print(f"    arrival order (online):  corral {med('util'):.2%}   first-fit {med('ff_util'):.2%}   "
          f"ratio {med('util') / med('ff_util'):.3f}")
    print(f"    sorted by size (offline): corral {med('bfd_util'):.2%}   FFD {med('ffd_util'):.2%}   "
          f"ratio {med('bfd_util') / med('ffd_util'):.3f}")
    print(f"    under churn (mean at each wait): corral {med('q_util'):.2%}   first-fit {med('qf_util'):.2%}; multi-GPU "
          f"requests that waited although enough GPUs were free, scattered: corral {med('q_stranded'):.0%}, "
          f"first-fit {med('qf_stranded'):.0%}")
    print(f"    corral online against FFD: {med('util'):.2%} vs {med('ffd_util'):.2%} "
          f"(ratio {med('util') / med('ffd_util'):.3f})")
    goal_rate = med("fill_rate") >= 5000 and med("churn_rate") >= 5000
    print(f"  goals: >= 5,000 placements/s: {'met' if goal_rate else 'NOT met'}; utilisation >= FFD: "
          f"{'met' if med('util') >= med('ffd_util') else 'not met online'} (arrival order), "
          f"{'met' if med('bfd_util') >= med('ffd_util') else 'NOT met'} (same sorted list)")


if __name__ == "__main__":
    main()
