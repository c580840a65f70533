"""Node failure detection: how long the control plane takes to declare a node lost, and how long a
node that comes back takes to be READY again as a fresh node.

    .venv/bin/python tools/bench/node_failure.py [--timeout 2] [--trials 5]

A control plane (`corral up --no-node --node-timeout T`) and one node daemon (`corral-node`), as
separate processes on this machine. Each trial:

- SIGSTOP of the node daemon (its stream stays open, its heartbeats stop: the heartbeat path) until
  `ListNodes` shows it lost, then SIGCONT until it is READY again under a new id;
- kill -9 of the node daemon (its stream closes: the stream path) until it is lost, then a new
  daemon under the same name until it is READY.

Times are measured by the client polling `ListNodes` every 20 ms, so they include up to 20 ms of
polling. The heartbeat path's bound is the timeout plus the plane's 0.2 s tick, less up to one
heartbeat interval (T/4, at most 5 s) already elapsed when the node stopped.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
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

import corral  # noqa: E402
from corral_protocol import env as corral_env  # noqa: E402
from corral_protocol.v1 import control_pb2  # noqa: E402

POLL_S = 0.02
BOUND_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(predicate: Callable[[], bool], what: str) -> float:
    """Seconds until `predicate()` holds."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > BOUND_S:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(POLL_S)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=float, default=2.0, help="the plane's node timeout, seconds")
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="corral-bench-node-failure-"))
    port = free_port()
    env = dict(os.environ, **{corral_env.CORRAL_HOME: str(work / "control")})
    for name in (corral_env.CORRAL_SERVER_URL, corral_env.CORRAL_TOKEN):
        env.pop(name, None)
    control = subprocess.Popen(
        [sys.executable, "-m", "corral.cli", "up", "--port", str(port), "--http-port", "0", "--no-node", "--node-timeout", str(args.timeout)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    daemons: list[subprocess.Popen[bytes]] = []
    try:
        wait(lambda: (work / "control" / "server.json").exists(), "the control plane")
        token = (work / "control" / "token").read_text().strip()
        client = corral.Client(f"grpc://127.0.0.1:{port}", token)
        node_env = dict(env, **{corral_env.CORRAL_HOME: str(work / "node"), corral_env.CORRAL_TOKEN: token})

        def start_node() -> subprocess.Popen[bytes]:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "corral_runtime.node_cli", "--server", f"grpc://127.0.0.1:{port}", "--name", "bench-node",
                 "--work-dir", str(work / "node-work")],
                env=node_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            daemons.append(daemon)
            return daemon

        def node() -> control_pb2.NodeInfo | None:
            nodes = client.call(client.stub.ListNodes, control_pb2.ListNodesRequest()).nodes
            return next((n for n in nodes if n.name == "bench-node"), None)

        def is_state(state: int, not_id: str = "") -> Callable[[], bool]:
            def check() -> bool:
                found = node()
                return found is not None and found.state == state and found.node_id != not_id
            return check

        daemon = start_node()
        wait(is_state(control_pb2.NODE_STATE_READY), "the node")
        stopped, resumed, killed, restarted = [], [], [], []
        for _ in range(args.trials):
            time.sleep(args.timeout / 3)  # a different phase of the heartbeat interval each time
            old = node()
            assert old is not None
            os.kill(daemon.pid, signal.SIGSTOP)
            stopped.append(wait(is_state(control_pb2.NODE_STATE_LOST), "loss by silence"))
            os.kill(daemon.pid, signal.SIGCONT)
            resumed.append(wait(is_state(control_pb2.NODE_STATE_READY, old.node_id), "re-registration"))
            old = node()
            assert old is not None
            daemon.kill()
            killed.append(wait(is_state(control_pb2.NODE_STATE_LOST), "loss by a closed stream"))
            daemon.wait()
            start = time.monotonic()
            daemon = start_node()
            wait(is_state(control_pb2.NODE_STATE_READY, old.node_id), "the restarted node")
            restarted.append(time.monotonic() - start)
        client.close()
    finally:
        for process in (*daemons, control):
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()

    def row(label: str, values: list[float]) -> str:
        return f"| {label} | {min(values):.2f} | {statistics.median(values):.2f} | {max(values):.2f} |"

    print(f"node timeout {args.timeout:g} s, heartbeat every {min(5.0, args.timeout / 4):g} s, {args.trials} trials, seconds:")
    print("| event | min | median | max |")
    print("|---|---|---|---|")
    print(row("SIGSTOP -> lost (no heartbeat)", stopped))
    print(row("SIGCONT -> ready again (new id)", resumed))
    print(row("kill -9 -> lost (stream closed)", killed))
    print(row("new daemon -> ready (process start included)", restarted))


if __name__ == "__main__":
    main()
