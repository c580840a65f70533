"""A real network cut of a node: how long the control plane takes to declare the node lost, and how
long the node takes to be READY again (as a fresh node) once its link is restored.

    .venv/bin/python tools/bench/node_network_cut.py [--timeout 2] [--trials 5] [--cut 0]

Root and iproute2 needed. A control plane on a host bridge and one `corral-node` in its own
network namespace (tools/bench/netns_cluster.py). Each trial cuts the node off (`--how port`, the
default: its bridge port disabled, frames dropped silently both ways as behind a failed switch;
`--how link`: its host-side veth down), waits until `ListNodes` shows the node lost, keeps it cut
until `--cut` seconds have passed since the cut (0: restore at once), restores it and waits until
the node is READY under a new id.

Times are measured by the client polling `ListNodes` every 20 ms, so they include up to 20 ms of
polling. Loss by silence comes between the timeout less one heartbeat interval (timeout/4, at most
5 s) and the timeout plus the plane's 0.2 s tick, counted from the node's last heartbeat.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for package in ("protocol", "sdk"):
    sys.path.insert(0, str(ROOT / "packages" / package / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from netns_cluster import NetnsCluster, NodeSpec  # noqa: E402

from corral_protocol import env as corral_env  # noqa: E402
from corral_protocol.v1 import control_pb2  # noqa: E402

POLL_S = 0.02
BOUND_S = 300.0


def wait(predicate: Callable[[], bool], what: str) -> float:
    """Seconds until `predicate()` holds."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > BOUND_S:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(POLL_S)
    return time.monotonic() - start


def cut(cluster: NetnsCluster, how: str, on: bool) -> None:
    """Cut (`on`) or restore the node's network: `port` disables its bridge port (frames dropped
    silently both ways, carriers up: NetnsCluster.cut_off); `link` takes its host-side veth down
    (the node's end loses its carrier too)."""
    if how == "port":
        cluster.cut_off("bench-node", cut=on)
    else:
        subprocess.run(["ip", "link", "set", f"crlh-{cluster.tag}-0", "down" if on else "up"], check=True, capture_output=True, timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=float, default=2.0, help="the plane's node timeout, seconds")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--how", choices=("link", "port"), default="port", help="drop silently at the bridge port, or take the veth down")
    parser.add_argument("--cut", type=float, default=0.0, help="keep the link down this long (s) after the cut, at least until the loss")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="corral-bench-node-cut-"))
    with NetnsCluster.running(work, [NodeSpec("bench-node")], plane_env={corral_env.CORRAL_NODE_TIMEOUT_S: str(args.timeout)},
                              node_env={corral_env.CORRAL_NODE_WARM_POOL: "0"}) as cluster:
        client = cluster.client()

        def node() -> control_pb2.NodeInfo | None:
            nodes = [n for n in client.call(client.stub.ListNodes, control_pb2.ListNodesRequest(), timeout=10).nodes
                     if n.name == "bench-node"]
            ready = [n for n in nodes if n.state == control_pb2.NODE_STATE_READY]
            return (ready or nodes or [None])[-1]

        def is_state(state: int, not_id: str = "") -> Callable[[], bool]:
            def check() -> bool:
                found = node()
                return found is not None and found.state == state and found.node_id != not_id
            return check

        lost, restored = [], []
        try:
            for _ in range(args.trials):
                time.sleep(args.timeout / 3)  # a different phase of the heartbeat interval each time
                old = node()
                assert old is not None and old.state == control_pb2.NODE_STATE_READY
                cut(cluster, args.how, on=True)
                cut_at = time.monotonic()
                try:
                    lost.append(wait(is_state(control_pb2.NODE_STATE_LOST), "loss by silence"))
                    time.sleep(max(0.0, args.cut - (time.monotonic() - cut_at)))
                finally:
                    cut(cluster, args.how, on=False)
                restored.append(wait(is_state(control_pb2.NODE_STATE_READY, old.node_id), "re-registration"))
        finally:
            client.close()

    def row(label: str, values: list[float]) -> str:
        return f"| {label} | {min(values):.2f} s | {statistics.median(values):.2f} s | {max(values):.2f} s |"

    print(f"node timeout {args.timeout:g} s, heartbeat every {min(5.0, args.timeout / 4):g} s, cut by {args.how}, kept >= {args.cut:g} s, "
          f"{args.trials} trials:")
    print("| event | min | median | max |")
    print("|---|---|---|---|")
    print(row("cut -> lost (no heartbeat)", lost))
    print(row("restored -> ready again (new id)", restored))


if __name__ == "__main__":
    main()
