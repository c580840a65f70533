"""GPU inventory parsing. This machine has no NVIDIA GPU, so NVML is replaced by `FakeNvml`,
a test double named as such; on a GPU node the same code reads the real pynvml."""

from __future__ import annotations

from types import SimpleNamespace

from corral_runtime.inventory import read_gpus, read_inventory


class FakeNvml:
    """Test double for pynvml: two H100s behind a 570 driver."""

    def __init__(self) -> None:
        self.shut_down = False

    def nvmlInit(self) -> None: ...

    def nvmlShutdown(self) -> None:
        self.shut_down = True

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"570.86.15"

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-{handle:08d}"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(total=80 * 1024**3)


class BrokenNvml(FakeNvml):
    """Test double for a host where libnvidia-ml cannot load."""

    def nvmlInit(self) -> None:
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")


def test_gpus_are_read_through_nvml() -> None:
    nvml = FakeNvml()
    gpus, driver = read_gpus(nvml)
    assert driver == "570.86.15"
    assert [(g.index, g.uuid, g.model, g.memory_mib) for g in gpus] == [
        (0, "GPU-00000000", "NVIDIA H100 80GB HBM3", 81920),
        (1, "GPU-00000001", "NVIDIA H100 80GB HBM3", 81920),
    ]
    assert nvml.shut_down


def test_a_host_without_nvml_simply_has_no_gpus() -> None:
    assert read_gpus(BrokenNvml()) == ([], "")


def test_real_inventory_of_this_machine() -> None:
    inventory = read_inventory()
    assert inventory.cpu >= 1 and inventory.memory_mib > 0
    assert inventory.python_version and inventory.kernel
