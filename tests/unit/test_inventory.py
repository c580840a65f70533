"""GPU inventory. This machine has no NVIDIA GPU, so NVML is replaced by `FakeNvml`, a test double
named as such; on a GPU node the same code reads the real pynvml."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from corral_protocol import env as corral_env
from corral_protocol.v1 import common_pb2, node_pb2
from corral_runtime.inventory import (
    NvmlGpus,
    SimulatedGpus,
    cuda_visible_devices,
    gpu_source,
    read_gpus,
    read_inventory,
    with_gpus,
)

GIB = 1024**3


class NotSupported(Exception):
    """What pynvml raises (NVMLError_NotSupported) for a call a device does not support."""


class FakeNvml:
    """Test double for pynvml: two H100s (the second with MIG enabled) and an L4 without MIG,
    behind a 570 driver with CUDA 12.8."""

    def __init__(self) -> None:
        self.inits = 0
        self.shut_down = False
        self.free_gib = 70
        self.lost: set[int] = set()

    def nvmlInit(self) -> None:
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shut_down = True

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"570.86.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12080

    def nvmlDeviceGetCount(self) -> int:
        return 3

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if index in self.lost:
            raise RuntimeError("GPU is lost")
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return "NVIDIA L4" if handle == 2 else "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, handle: int) -> bytes:
        return f"GPU-{handle:08d}-0000-0000-0000-000000000000".encode()

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(total=80 * GIB, free=self.free_gib * GIB, used=(80 - self.free_gib) * GIB)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=40 + handle, memory=10)

    def nvmlDeviceGetMigMode(self, handle: int) -> tuple[int, int]:
        if handle == 2:
            raise NotSupported("Not Supported")
        return (1, 1) if handle == 1 else (0, 0)


class BrokenNvml(FakeNvml):
    """Test double for a host where libnvidia-ml cannot load."""

    def nvmlInit(self) -> None:
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")


def test_gpus_are_read_through_nvml() -> None:
    nvml = FakeNvml()
    reading = NvmlGpus(nvml).read()
    assert (reading.driver_version, reading.cuda_version, reading.simulated) == ("570.86.15", "12.8", False)
    assert [(g.index, g.uuid[:12], g.model, g.memory_mib, g.memory_free_mib, g.utilization_percent, g.mig_mode)
            for g in reading.devices] == [
        (0, "GPU-00000000", "NVIDIA H100 80GB HBM3", 81920, 71680, 40, common_pb2.GPU_MIG_MODE_DISABLED),
        (1, "GPU-00000001", "NVIDIA H100 80GB HBM3", 81920, 71680, 41, common_pb2.GPU_MIG_MODE_ENABLED),
        (2, "GPU-00000002", "NVIDIA L4", 81920, 71680, 42, common_pb2.GPU_MIG_MODE_UNSPECIFIED),
    ]


def test_nvml_is_opened_once_and_read_again_on_every_heartbeat() -> None:
    nvml = FakeNvml()
    source = NvmlGpus(nvml)
    source.read()
    nvml.free_gib = 10
    nvml.lost = {1}
    reading = source.read()
    assert nvml.inits == 1
    assert [g.index for g in reading.devices] == [0, 2]  # a lost device is left out, so it is not placed
    assert reading.devices[0].memory_free_mib == 10 * 1024
    source.close()
    assert nvml.shut_down


def test_read_gpus_is_one_reading() -> None:
    nvml = FakeNvml()
    devices, driver = read_gpus(nvml)
    assert driver == "570.86.15" and len(devices) == 3 and nvml.shut_down


def test_a_host_without_nvml_is_a_cpu_node() -> None:
    assert read_gpus(BrokenNvml()) == ([], "")
    inventory = read_inventory(gpu_source=NvmlGpus(BrokenNvml()))
    assert list(inventory.gpus) == [] and not inventory.simulated_gpus


def test_real_inventory_of_this_machine() -> None:
    inventory = read_inventory()
    assert inventory.cpu >= 1 and inventory.memory_mib > 0
    assert inventory.python_version and inventory.kernel


def test_simulated_gpus_look_like_real_ones() -> None:
    a = SimulatedGpus("H100:2,L4:1", "node-a").read()
    again = SimulatedGpus("H100:2,L4:1", "node-a").read()
    b = SimulatedGpus("H100:2,L4:1", "node-b").read()
    assert a.simulated
    assert [(g.index, g.model, g.memory_mib) for g in a.devices] == [
        (0, "NVIDIA H100 80GB HBM3", 81559), (1, "NVIDIA H100 80GB HBM3", 81559), (2, "NVIDIA L4", 23034),
    ]
    uuids = [g.uuid for g in a.devices]
    assert all(u.startswith("GPU-") and len(u) == 40 for u in uuids) and len(set(uuids)) == 3
    assert uuids == [g.uuid for g in again.devices]  # stable across restarts of the node
    assert not set(uuids) & {g.uuid for g in b.devices}  # distinct across nodes


def test_simulated_gpus_come_from_the_flag_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(corral_env.CORRAL_SIMULATE_GPUS, "A100-80GB:4")
    inventory = read_inventory(gpu_source=gpu_source(None, "n"))
    assert inventory.simulated_gpus and [g.model for g in inventory.gpus] == ["NVIDIA A100-SXM4-80GB"] * 4
    assert isinstance(gpu_source("H100:8", "n"), SimulatedGpus)
    monkeypatch.delenv(corral_env.CORRAL_SIMULATE_GPUS)
    assert isinstance(gpu_source(None, "n"), NvmlGpus)


def test_a_heartbeat_inventory_carries_the_new_reading() -> None:
    nvml = FakeNvml()
    source = NvmlGpus(nvml)
    inventory = read_inventory(cpu=4, memory_mib=1024, gpu_source=source)
    nvml.free_gib = 1
    refreshed = with_gpus(inventory, source.read())
    assert refreshed.cpu == 4 and refreshed.cuda_version == "12.8"
    assert [g.memory_free_mib for g in refreshed.gpus] == [1024] * 3
    assert [g.memory_free_mib for g in inventory.gpus] == [71680] * 3


def test_containers_see_their_gpus_by_uuid() -> None:
    start = node_pb2.StartContainer(gpu_indices=[2, 5], gpu_uuids=["GPU-aaa", "GPU-bbb"])
    assert cuda_visible_devices(start) == "GPU-aaa,GPU-bbb"
    assert cuda_visible_devices(node_pb2.StartContainer(gpu_indices=[2, 5])) == "2,5"  # an older control plane
    assert cuda_visible_devices(node_pb2.StartContainer()) == ""  # CPU-only: no GPU visible
