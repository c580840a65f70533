"""What a node offers: CPU cores, memory, GPUs read through NVML, and whether it can take memory snapshots."""

from __future__ import annotations

import logging
import os
import platform
from typing import Any

from corral_protocol.v1 import common_pb2
from corral_runtime import criu, namespaces
from corral_runtime.snapshots import gpu_checkpoint_supported

log = logging.getLogger("corral.runtime")


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


def read_gpus(nvml: Any = None) -> tuple[list[common_pb2.GpuDevice], str]:
    """GPUs through NVML, and the driver version. A host without NVML simply has no GPUs.

    `nvml` defaults to the real `pynvml` module (nvidia-ml-py); tests of the parsing pass a
    stand-in, since this machine has no NVIDIA GPU.
    """
    if nvml is None:
        try:
            import pynvml
        except ImportError:
            return [], ""
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except Exception as err:
        log.debug("NVML unavailable: %s", err)
        return [], ""
    try:
        driver = nvml.nvmlSystemGetDriverVersion()
        devices = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            uuid = nvml.nvmlDeviceGetUUID(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            devices.append(common_pb2.GpuDevice(
                index=index,
                uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                model=name.decode() if isinstance(name, bytes) else str(name),
                memory_mib=int(memory.total // (1024 * 1024)),
            ))
        return devices, driver.decode() if isinstance(driver, bytes) else str(driver)
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass


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


def read_inventory(cpu: float | None = None, memory_mib: int | None = None) -> common_pb2.NodeInventory:
    gpus, driver = read_gpus()
    return common_pb2.NodeInventory(
        cpu=cpu if cpu is not None else cpu_count(),
        memory_mib=memory_mib if memory_mib is not None else total_memory_mib(),
        gpus=gpus,
        python_version=platform.python_version(),
        kernel=platform.release(),
        driver_version=driver,
        snapshots=read_snapshot_support(driver),
    )
