"""What a node offers: CPU cores, memory, GPUs read through NVML (or declared as simulated), and
whether it can take memory snapshots. The GPU reading is refreshed on every heartbeat."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from corral_protocol import env as corral_env
from corral_protocol import gpus
from corral_protocol.v1 import common_pb2, node_pb2
from corral_runtime import criu, namespaces
from corral_runtime.snapshots import gpu_checkpoint_supported

log = logging.getLogger("corral.runtime")

MIB = 1024 * 1024


def total_memory_mib() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024))
    except (ValueError, OSError, AttributeError):
        return 1024


def cpu_count() -> float:
    try:
        return float(len(os.sched_getaffinity(0)))
    except AttributeError:
        return float(os.cpu_count() or 1)


@dataclass(frozen=True)
class GpuReading:
    """The node's GPUs as of one reading, with the driver's versions."""

    devices: list[common_pb2.GpuDevice] = field(default_factory=list)
    driver_version: str = ""
    cuda_version: str = ""
    simulated: bool = False


class GpuSource(Protocol):
    def read(self) -> GpuReading: ...


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlGpus:
    """GPUs read through NVML (nvidia-ml-py), initialised once and read again on every heartbeat.

    A host where NVML cannot load (no driver, no GPU) reads as no GPUs: a CPU node, not an error.
    `nvml` defaults to the real `pynvml` module; unit tests pass `FakeNvml`, a test double, since
    this project's machines have no NVIDIA GPU."""

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self._started: bool | None = None
        self._failing: set[int] = set()

    def _start(self) -> bool:
        if self._started is None:
            self._started = False
            if self._nvml is None:
                try:
                    import pynvml
                except ImportError:
                    return False
                self._nvml = pynvml
            try:
                self._nvml.nvmlInit()
                self._started = True
            except Exception as err:
                log.info("no GPUs: NVML is unavailable (%s)", err)
        return self._started

    def read(self) -> GpuReading:
        if not self._start():
            return GpuReading()
        nvml = self._nvml
        try:
            driver = _text(nvml.nvmlSystemGetDriverVersion())
            count = nvml.nvmlDeviceGetCount()
        except Exception as err:
            log.warning("NVML could not list the GPUs: %s", err)
            return GpuReading()
        cuda = ""
        with contextlib.suppress(Exception):
            version = int(nvml.nvmlSystemGetCudaDriverVersion())  # e.g. 12040
            cuda = f"{version // 1000}.{version % 1000 // 10}"
        devices = []
        for index in range(count):
            try:
                devices.append(self._device(index))
                self._failing.discard(index)
            except Exception as err:  # a device that fell off the bus is left out, so it is not placed
                if index not in self._failing:
                    log.warning("GPU %d cannot be read through NVML and is left out: %s", index, err)
                self._failing.add(index)
        return GpuReading(devices, driver, cuda)

    def _device(self, index: int) -> common_pb2.GpuDevice:
        nvml = self._nvml
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        device = common_pb2.GpuDevice(
            index=index, uuid=_text(nvml.nvmlDeviceGetUUID(handle)), model=_text(nvml.nvmlDeviceGetName(handle)),
            memory_mib=int(memory.total // MIB), memory_free_mib=int(memory.free // MIB),
        )
        with contextlib.suppress(Exception):
            device.utilization_percent = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        try:
            current, _pending = nvml.nvmlDeviceGetMigMode(handle)
            device.mig_mode = common_pb2.GPU_MIG_MODE_ENABLED if current else common_pb2.GPU_MIG_MODE_DISABLED
        except Exception:  # NotSupported: a GPU without MIG
            device.mig_mode = common_pb2.GPU_MIG_MODE_UNSPECIFIED
        return device

    def close(self) -> None:
        if self._started:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
        self._started = None


class SimulatedGpus:
    """GPUs that do not exist, declared as `"H100:8"` (`corral-node --simulate-gpus`, or
    `CORRAL_SIMULATE_GPUS` for the node `corral up` embeds): for tests and capacity planning only.
    Each device has NVML's name and memory for its model and a stable UUID of real form, derived
    from the node's name, so containers see `CUDA_VISIBLE_DEVICES` as on a real node."""

    def __init__(self, spec: str, node_name: str) -> None:
        self.devices: list[common_pb2.GpuDevice] = []
        for model, count in gpus.parse_simulated(spec):
            for _ in range(count):
                index = len(self.devices)
                self.devices.append(common_pb2.GpuDevice(
                    index=index, uuid=f"GPU-{uuid.uuid5(_SIMULATED_NAMESPACE, f'{node_name}/{index}')}",
                    model=model.nvml_name, memory_mib=model.simulated_memory_mib, memory_free_mib=model.simulated_memory_mib,
                ))

    def read(self) -> GpuReading:
        return GpuReading(list(self.devices), simulated=True)


_SIMULATED_NAMESPACE = uuid.UUID("5b0d7f36-0c8e-4f57-9a49-3a3c2f1e6d10")


def gpu_source(simulate: str | None, node_name: str) -> GpuSource:
    """Simulated GPUs when `simulate` (else `CORRAL_SIMULATE_GPUS`) declares some, else NVML."""
    spec = simulate if simulate is not None else os.environ.get(corral_env.CORRAL_SIMULATE_GPUS, "")
    if spec.strip():
        simulated = SimulatedGpus(spec, node_name)
        log.warning("this node declares %d simulated GPU(s) (%s): for tests and capacity planning only",
                    len(simulated.devices), spec)
        return simulated
    return NvmlGpus()


def read_gpus(nvml: Any = None) -> tuple[list[common_pb2.GpuDevice], str]:
    """One NVML reading: the GPUs and the driver version (no GPUs without NVML)."""
    source = NvmlGpus(nvml)
    try:
        reading = source.read()
    finally:
        source.close()
    return reading.devices, reading.driver_version


def with_gpus(inventory: common_pb2.NodeInventory, reading: GpuReading) -> common_pb2.NodeInventory:
    """The inventory with this GPU reading (what a heartbeat carries)."""
    refreshed = common_pb2.NodeInventory()
    refreshed.CopyFrom(inventory)
    del refreshed.gpus[:]
    refreshed.gpus.extend(reading.devices)
    refreshed.driver_version = reading.driver_version
    refreshed.cuda_version = reading.cuda_version
    refreshed.simulated_gpus = reading.simulated
    return refreshed


def cuda_visible_devices(start: node_pb2.StartContainer) -> str:
    """`CUDA_VISIBLE_DEVICES` for a container: its GPUs by UUID (by index from a control plane of
    the first protocol version); empty hides every GPU from a CPU-only container."""
    if start.gpu_uuids:
        return ",".join(start.gpu_uuids)
    return ",".join(str(i) for i in start.gpu_indices)


def read_snapshot_support(driver_version: str = "") -> common_pb2.SnapshotSupport:
    """CRIU's verdict for this node (runs `criu check`), logged once: nodes call this at start."""
    support = criu.detect()
    log.info("memory snapshots: %s%s", support.describe(), f" [{support.path}]" if support.path else "")
    if support.available and not namespaces.available():
        support = criu.CriuSupport(False, "unshare and setsid (util-linux) are needed to run workers in pid namespaces", support.version, support.path)
        log.warning("memory snapshots: %s", support.describe())
    return common_pb2.SnapshotSupport(
        available=support.available, reason=support.reason, criu_version=support.version,
        gpu_checkpoint=support.available and gpu_checkpoint_supported(driver_version),
    )


def read_inventory(cpu: float | None = None, memory_mib: int | None = None, gpu_source: GpuSource | None = None) -> common_pb2.NodeInventory:
    """What this node offers; GPUs from `gpu_source` (NVML by default)."""
    reading = (gpu_source or NvmlGpus()).read()
    inventory = common_pb2.NodeInventory(
        cpu=cpu if cpu is not None else cpu_count(),
        memory_mib=memory_mib if memory_mib is not None else total_memory_mib(),
        python_version=platform.python_version(),
        kernel=platform.release(),
        snapshots=read_snapshot_support(reading.driver_version),
    )
    return with_gpus(inventory, reading)
