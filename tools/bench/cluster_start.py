"""End-to-end start of many containers across namespace nodes (issue 12, part 7).

    .venv/bin/python tools/bench/cluster_start.py [--containers 200] [--nodes 3] [--timeout 600]

As root: three `corral-node` daemons, each in its own network namespace, join one TLS control plane
(tools/bench/netns_cluster.py, the same cluster as tests/e2e/test_netns_cluster.py). Then, in the
same run:

- baseline: one container of a fresh service (`update_autoscaler(min_containers=1)`) until READY,
  three times (three services), the median;
- the measurement: one service asked for `--containers` containers at once
  (`update_autoscaler(min_containers=N)`), until all are READY: the time to the first, the median
  and the last, how they spread over the nodes, and the ratio of the whole to the baseline (how
  many single starts the N cost) with containers per second.

Containers reserve a CPU share sized so that N fill the nodes to ~90% (placement packs nodes best
fit, so the N span every node) with no CPU quota, and 32 MiB of memory (limit 512 MiB). Bounded:
it refuses N over 1,000, and a host whose available memory cannot hold N workers (~75 MiB each),
and gives up after --timeout seconds; the cluster and its namespaces are removed however it ends.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from netns_cluster import NetnsCluster, NodeSpec, missing_prerequisites  # noqa: E402

APP = "cluster-start"
WORKER_MIB = 75  # a generous bound on a worker's memory (200 took ~3 GiB of MemAvailable here: pages are shared)
MAX_CONTAINERS = 1000


def available_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


def ready_times(client: object, batch: str, want: int, started: float, deadline: float) -> list[float]:
    """Seconds from `started` at which each of the `batch` service's containers was first seen READY."""
    from corral_protocol.v1 import control_pb2

    seen: dict[str, float] = {}
    while len(seen) < want:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(seen)} of {want} containers READY before the deadline")
        found = client.call(client.stub.ListContainers, control_pb2.ListContainersRequest(), timeout=30).containers  # type: ignore[attr-defined]
        now = time.monotonic() - started
        for c in found:
            if c.class_name == "Idle" and c.state == control_pb2.CONTAINER_STATE_READY and c.container_id not in seen \
                    and any(p.name == "batch" and p.value.string_value == batch for p in c.parameters):
                seen[c.container_id] = now
        time.sleep(0.1)
    return sorted(seen.values())


def start(client: object, cls: object, batch: str, count: int, cpu: float, deadline: float) -> list[float]:
    service = cls.with_options(cpu=(cpu, 8))(batch=batch)  # type: ignore[attr-defined]
    began = time.monotonic()
    service.update_autoscaler(min_containers=count)
    return ready_times(client, batch, count, began, deadline)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds (default 600)")
    args = parser.parse_args()
    missing = missing_prerequisites()
    if missing:
        print(f"cluster_start: needs {' and '.join(missing)}", file=sys.stderr)
        return 2
    if not 1 <= args.containers <= MAX_CONTAINERS or not 1 <= args.nodes <= 16:
        print(f"cluster_start: --containers 1..{MAX_CONTAINERS} and --nodes 1..16", file=sys.stderr)
        return 2
    need = (args.containers + 3) * WORKER_MIB + 2048
    if available_mib() < need:
        print(f"cluster_start: {args.containers} workers need about {need} MiB available, this host has {available_mib()}",
              file=sys.stderr)
        return 2
    import corral

    specs = [NodeSpec(f"node-{i}") for i in range(args.nodes)]
    with tempfile.TemporaryDirectory(prefix="corral-cluster-start-") as work, NetnsCluster.running(Path(work), specs) as cluster:
        deployed = subprocess.run([sys.executable, "-m", "corral.cli", "deploy", str(HERE / "cluster_apps.py")],
                                  env=cluster.client_env({"PYTHONPATH": str(HERE)}), capture_output=True, text=True, timeout=120)
        if deployed.returncode != 0:
            print(deployed.stderr, file=sys.stderr)
            return 1
        client = cluster.client()
        from corral_protocol.v1 import control_pb2

        nodes = client.call(client.stub.ListNodes, control_pb2.ListNodesRequest()).nodes
        # A share that fills the nodes to ~90% with N containers, so best-fit packing spans them all.
        cpu = round(sum(n.inventory.cpu for n in nodes) * 0.9 / (args.containers + 3), 4)
        idle = corral.Cls.from_name(APP, "Idle", client=client)
        deadline = time.monotonic() + args.timeout
        singles = [start(client, idle, f"single-{i}", 1, cpu, deadline)[0] for i in range(3)]
        baseline = statistics.median(singles)
        times = start(client, idle, "bulk", args.containers, cpu, deadline)
        total = times[-1]
        found = client.call(client.stub.ListContainers, control_pb2.ListContainersRequest()).containers
        names = {n.node_id: n.name for n in nodes}
        spread: dict[str, int] = {}
        for c in found:
            if any(p.name == "batch" and p.value.string_value == "bulk" for p in c.parameters):
                spread[names[c.node_id]] = spread.get(names[c.node_id], 0) + 1
        client.close()
        print(f"nodes: {args.nodes} network namespaces ({cluster.describe()}), cpu share per container {cpu}")
        print(f"baseline: one container start, median of 3: {baseline:.2f} s ({', '.join(f'{s:.2f}' for s in singles)})")
        print(f"{args.containers} containers at once: first READY {times[0]:.2f} s, median {statistics.median(times):.2f} s, "
              f"all READY {total:.2f} s ({args.containers / total:.1f} containers/s)")
        print(f"spread over nodes: {dict(sorted(spread.items()))}")
        print(f"ratio: all {args.containers} / one = {total / baseline:.1f}x the time of a single start "
              f"({args.containers * baseline / total:.1f}x the throughput of starting them one by one)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
