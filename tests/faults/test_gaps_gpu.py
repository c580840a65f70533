"""CUDA_VISIBLE_DEVICES from the GPUs the control plane assigned, on a node that simulates two GPUs
(a `NodeDaemon` given an inventory with them: the placement, reservation and environment code paths
are the real ones; nothing uses the GPUs). Empty during snap=True hooks on a node without GPU
checkpointing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

import corral
import gaps_gpu_app
from conftest import APPS, free_port, require_snapshot_prerequisites, wait_for
from corral_protocol.v1 import control_pb2

NODE = """
import asyncio, sys
from pathlib import Path
from corral_protocol.v1 import common_pb2
from corral_runtime.inventory import read_inventory
from corral_runtime.node import NodeDaemon

url, token, work = sys.argv[1:4]
inventory = read_inventory()
del inventory.gpus[:]
inventory.gpus.extend(common_pb2.GpuDevice(index=i, uuid=f"GPU-sim-{i}", model="Simulated GPU", memory_mib=1024) for i in range(2))
inventory.snapshots.gpu_checkpoint = False
asyncio.run(NodeDaemon(url, token, Path(work), name="sim-gpu", inventory=inventory).run())
"""


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[corral.Client]:
    root = tmp_path_factory.mktemp("gpu")
    home, port = root / "control", free_port()
    env = dict(os.environ, CORRAL_HOME=str(home), PYTHONPATH=str(APPS))
    env.pop("CORRAL_SERVER_URL", None)
    env.pop("CORRAL_TOKEN", None)
    control = subprocess.Popen([sys.executable, "-m", "corral.cli", "up", "--port", str(port), "--http-port", "0", "--no-node"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    node = None
    try:
        wait_for(lambda: (home / "server.json").exists(), message="control plane start")
        url, token = f"grpc://127.0.0.1:{port}", (home / "token").read_text().strip()
        node = subprocess.Popen([sys.executable, "-c", NODE, url, token, str(root / "node-work")],
                                env=dict(env, CORRAL_HOME=str(root / "node-home")), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, text=True)
        client = corral.Client(url, token)
        nodes = lambda: client.call(client.stub.ListNodes, control_pb2.ListNodesRequest()).nodes  # noqa: E731
        wait_for(lambda: len(nodes()) == 1, timeout=60, message="the simulated-GPU node to join")
        with gaps_gpu_app.app.run(client=client):
            yield client
        client.close()
    finally:
        for process in (node, control):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


def test_cuda_visible_devices_names_the_assigned_gpus(gpu_cluster: corral.Client) -> None:
    one = gaps_gpu_app.OneGpu().visible.remote()
    assert one in {"0", "1"}
    # Its GPU stays reserved while its container lives (2 s after its last input): a class that
    # wants both GPUs waits for that, then sees both.
    assert sorted(gaps_gpu_app.TwoGpus().visible.remote().split(",")) == ["0", "1"]

def test_snap_hooks_see_no_gpu_and_serving_sees_its_gpu(gpu_cluster: corral.Client) -> None:
    require_snapshot_prerequisites()
    during_snap, after = gaps_gpu_app.SnapGpu().seen.remote()
    assert during_snap == "" and after in {"0", "1"}
