"""GPU names: what a class may ask for, and which NVML devices each name accepts. One table for
every package: the SDK refuses an unknown name when a class is defined, the control plane
re-checks it and places by it, and a node simulating GPUs reports the NVML names listed here.

A request is `"H100"`, `"H100:2"` (a count, 1 to 8), `"any"`, or an ordered list of fallbacks,
each with its own count (`["H100", "A100-80GB:2"]`). Names match NVML's model names through an
explicit table, never by substring: "NVIDIA A100-SXM4-80GB" is an A100-80GB (and an A100), not
an A10; "NVIDIA L40S" is not an L4.

Example:
    from corral_protocol import gpus

    request = gpus.parse_request(["H100", "A100-80GB:2"])
    gpus.request_choices(request)            # [("H100", 1), ("A100-80GB", 2)]
    gpus.matches("A100-80GB", "NVIDIA A100-SXM4-80GB")   # True
    gpus.matches("A10", "NVIDIA A100-SXM4-80GB")         # False
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from corral_protocol.v1 import common_pb2

ANY = "any"
"""The request name that accepts every GPU a node offers."""
MAX_COUNT = 8
"""GPUs one container may ask for (one node's worth)."""


@dataclass(frozen=True)
class GpuModel:
    """What a request name asks for: a family, and a memory size when the name implies one."""

    family: str
    memory_gb: int | None
    nvml_name: str
    """The NVML name a simulated device of this request reports."""
    simulated_memory_mib: int
    """The total memory a simulated device of this request reports (what NVML reports for it)."""


REQUEST_NAMES: dict[str, GpuModel] = {
    "T4": GpuModel("T4", None, "Tesla T4", 15360),
    "L4": GpuModel("L4", None, "NVIDIA L4", 23034),
    "A10": GpuModel("A10", None, "NVIDIA A10", 23028),
    "A10G": GpuModel("A10", None, "NVIDIA A10G", 23028),  # Modal's older name for the same class
    "A100": GpuModel("A100", None, "NVIDIA A100-SXM4-40GB", 40960),
    "A100-40GB": GpuModel("A100", 40, "NVIDIA A100-SXM4-40GB", 40960),
    "A100-80GB": GpuModel("A100", 80, "NVIDIA A100-SXM4-80GB", 81920),
    "L40S": GpuModel("L40S", None, "NVIDIA L40S", 46068),
    "H100": GpuModel("H100", None, "NVIDIA H100 80GB HBM3", 81559),
    "H200": GpuModel("H200", None, "NVIDIA H200", 143771),
    "B200": GpuModel("B200", None, "NVIDIA B200", 183359),
}
"""Request name (upper case) -> the devices it accepts. `"any"` is not a row: it accepts all."""

NVML_MODELS: dict[str, tuple[str, int]] = {
    "Tesla T4": ("T4", 16),
    "NVIDIA L4": ("L4", 24),
    "NVIDIA A10": ("A10", 24),
    "NVIDIA A10G": ("A10", 24),
    "NVIDIA A100-SXM4-40GB": ("A100", 40),
    "NVIDIA A100-PCIE-40GB": ("A100", 40),
    "NVIDIA A100-SXM4-80GB": ("A100", 80),
    "NVIDIA A100 80GB PCIe": ("A100", 80),
    "NVIDIA L40S": ("L40S", 48),
    "NVIDIA H100 80GB HBM3": ("H100", 80),
    "NVIDIA H100 PCIe": ("H100", 80),
    "NVIDIA H100 NVL": ("H100", 94),
    "NVIDIA H200": ("H200", 141),
    "NVIDIA H200 NVL": ("H200", 141),
    "NVIDIA B200": ("B200", 180),
}
"""NVML model name (`nvmlDeviceGetName`) -> (family, memory in GB). A device whose name is not
here matches only `"any"`; add its row to place it by name."""

_NVML_LOOKUP = {" ".join(name.upper().split()): row for name, row in NVML_MODELS.items()}


class GpuSpecError(ValueError):
    """A `gpu=` value that is not a known GPU request; the message says what is accepted."""


def accepted_names() -> str:
    """The accepted request names, for messages."""
    return ", ".join([*REQUEST_NAMES, ANY])


def canonical_name(name: str) -> str:
    """`"h100"` -> `"H100"`, `"ANY"` -> `"any"`; raises `GpuSpecError` for an unknown name."""
    upper = name.strip().upper()
    if upper == ANY.upper():
        return ANY
    if upper not in REQUEST_NAMES:
        raise GpuSpecError(f"unknown GPU {name.strip()!r}; choose one of {accepted_names()} (e.g. 'H100:2')")
    return upper


def parse_choice(spec: str) -> tuple[str, int]:
    """`"H100:2"` -> `("H100", 2)`; the count defaults to 1 and must be 1 to `MAX_COUNT`."""
    name, sep, count_text = spec.strip().partition(":")
    if not name or (sep and not count_text.strip().isdigit()):
        raise GpuSpecError(f"gpu {spec!r} is not of the form MODEL or MODEL:COUNT (e.g. 'A100', 'H100:2', 'any')")
    count = int(count_text) if sep else 1
    if not 1 <= count <= MAX_COUNT:
        raise GpuSpecError(f"gpu count must be between 1 and {MAX_COUNT}, got {count} in {spec!r}")
    return canonical_name(name), count


def parse_request(gpu: str | Sequence[str]) -> common_pb2.GpuRequest:
    """A `gpu=` value as a `GpuRequest`: `choices` in order, and for readers of the first protocol
    version, `models` with the first choice's count."""
    specs = [gpu] if isinstance(gpu, str) else list(gpu)
    if not specs or not all(isinstance(s, str) for s in specs):
        raise GpuSpecError(f"gpu must be a string like 'A100' or 'H100:2', or a list of them; got {gpu!r}")
    choices = [parse_choice(spec) for spec in specs]
    if len({name for name, _ in choices}) != len(choices):
        raise GpuSpecError(f"gpu fallbacks name a model twice: {gpu!r}")
    return common_pb2.GpuRequest(
        models=[name for name, _ in choices], count=choices[0][1],
        choices=[common_pb2.GpuChoice(model=name, count=count) for name, count in choices],
    )


def request_choices(request: common_pb2.GpuRequest) -> list[tuple[str, int]]:
    """The (name, count) fallbacks of a request, in order; `[]` for none. Reads `models` and
    `count` when a client of the first protocol version sent no `choices`."""
    if request.choices:
        return [(c.model, c.count) for c in request.choices if c.count > 0]
    if request.count == 0:
        return []
    return [(model, request.count) for model in request.models]


def check_request(request: common_pb2.GpuRequest) -> None:
    """Raises `GpuSpecError` unless every choice names a known GPU and a count of 1 to `MAX_COUNT`."""
    for name, count in request_choices(request):
        if canonical_name(name) != name:
            raise GpuSpecError(f"gpu {name!r} is not written as the table writes it ({canonical_name(name)!r})")
        if not 1 <= count <= MAX_COUNT:
            raise GpuSpecError(f"gpu count must be between 1 and {MAX_COUNT}, got {count} for {name}")


def describe_request(request: common_pb2.GpuRequest) -> str:
    """`"H100:2 or A100-80GB:2"`, for messages."""
    return " or ".join(f"{name}:{count}" for name, count in request_choices(request))


def device_family(nvml_name: str) -> tuple[str, int] | None:
    """(family, memory in GB) of an NVML model name; None for a name not in the table."""
    return _NVML_LOOKUP.get(" ".join(nvml_name.upper().split()))


def matches(request_name: str, nvml_name: str) -> bool:
    """Whether a device NVML names `nvml_name` satisfies the request name (canonical, as
    `canonical_name` writes it)."""
    if request_name == ANY:
        return True
    wanted = REQUEST_NAMES.get(request_name)
    device = device_family(nvml_name)
    if wanted is None or device is None:
        return False
    return device[0] == wanted.family and (wanted.memory_gb is None or device[1] == wanted.memory_gb)


def parse_simulated(spec: str) -> list[tuple[GpuModel, int]]:
    """`"H100:8"` or `"H100:4,A100-80GB:2"`: the devices a simulated node declares."""
    out = []
    for part in spec.split(","):
        if not part.strip():
            continue
        name, count = parse_choice(part) if ":" in part else (canonical_name(part), 1)
        if name == ANY:
            raise GpuSpecError("simulated GPUs need a model name, not 'any'")
        out.append((REQUEST_NAMES[name], count))
    if not out:
        raise GpuSpecError(f"no GPUs in {spec!r}; write e.g. 'H100:8'")
    return out
