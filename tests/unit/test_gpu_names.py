"""The GPU name table (`corral_protocol.gpus`): every request name against real NVML model names,
and the `gpu=` forms the SDK accepts or refuses."""

from __future__ import annotations

import pytest

from corral_protocol import gpus

# What `nvmlDeviceGetName` returns on real hardware.
REAL_NVML_NAMES = [
    "Tesla T4",
    "NVIDIA L4",
    "NVIDIA A10",
    "NVIDIA A10G",
    "NVIDIA A100-SXM4-40GB",
    "NVIDIA A100-PCIE-40GB",
    "NVIDIA A100-SXM4-80GB",
    "NVIDIA A100 80GB PCIe",
    "NVIDIA L40S",
    "NVIDIA L40",
    "NVIDIA H100 80GB HBM3",
    "NVIDIA H100 PCIe",
    "NVIDIA H100 NVL",
    "NVIDIA H200",
    "NVIDIA H200 NVL",
    "NVIDIA B200",
    "NVIDIA GeForce RTX 4090",
]

# Request name -> exactly the real NVML names it accepts.
ACCEPTS = {
    "T4": {"Tesla T4"},
    "L4": {"NVIDIA L4"},
    "A10": {"NVIDIA A10", "NVIDIA A10G"},
    "A10G": {"NVIDIA A10", "NVIDIA A10G"},
    "A100": {"NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB", "NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe"},
    "A100-40GB": {"NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB"},
    "A100-80GB": {"NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe"},
    "L40S": {"NVIDIA L40S"},
    "H100": {"NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL"},
    "H200": {"NVIDIA H200", "NVIDIA H200 NVL"},
    "B200": {"NVIDIA B200"},
    "any": set(REAL_NVML_NAMES),
}


def test_every_request_name_has_its_row_here() -> None:
    assert set(ACCEPTS) == {*gpus.REQUEST_NAMES, gpus.ANY}


@pytest.mark.parametrize("request_name", sorted(ACCEPTS))
@pytest.mark.parametrize("nvml_name", REAL_NVML_NAMES)
def test_request_names_match_exactly_their_nvml_names(request_name: str, nvml_name: str) -> None:
    assert gpus.matches(request_name, nvml_name) == (nvml_name in ACCEPTS[request_name])


@pytest.mark.parametrize(
    ("request_name", "nvml_name", "expected"),
    [
        ("A100-80GB", "NVIDIA A100-SXM4-80GB", True),
        ("A10", "NVIDIA A100-SXM4-80GB", False),  # a substring test would say yes
        ("L4", "NVIDIA L40S", False),
        ("A100-40GB", "NVIDIA A100-SXM4-80GB", False),
        ("H100", "NVIDIA H200", False),
        ("H100", "nvidia  h100 80gb hbm3", True),  # NVML's spacing and case are not significant
        ("H100", "NVIDIA GH200 480GB", False),  # not in the table: only "any" takes it
        ("any", "NVIDIA GH200 480GB", True),
    ],
)
def test_notable_pairs(request_name: str, nvml_name: str, expected: bool) -> None:
    assert gpus.matches(request_name, nvml_name) is expected


@pytest.mark.parametrize("name", sorted(gpus.REQUEST_NAMES))
def test_a_simulated_device_is_what_its_name_asks_for(name: str) -> None:
    model = gpus.REQUEST_NAMES[name]
    assert gpus.matches(name, model.nvml_name)
    assert model.nvml_name in gpus.NVML_MODELS


@pytest.mark.parametrize(
    ("spec", "choices"),
    [
        ("H100", [("H100", 1)]),
        ("h100:2", [("H100", 2)]),
        ("any", [("any", 1)]),
        ("ANY:8", [("any", 8)]),
        (["H100", "A100-80GB:2"], [("H100", 1), ("A100-80GB", 2)]),
        (["H200:4", "H100:8", "any:8"], [("H200", 4), ("H100", 8), ("any", 8)]),
    ],
)
def test_accepted_forms(spec: str | list[str], choices: list[tuple[str, int]]) -> None:
    request = gpus.parse_request(spec)
    assert gpus.request_choices(request) == choices
    assert list(request.models) == [name for name, _ in choices] and request.count == choices[0][1]
    gpus.check_request(request)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("A10X", "unknown GPU 'A10X'; choose one of T4, L4, A10"),
        ("NVIDIA H100 80GB HBM3", "unknown GPU"),
        ("H100:0", "between 1 and 8"),
        ("H100:9", "between 1 and 8"),
        ("H100:x", "MODEL:COUNT"),
        (":2", "MODEL:COUNT"),
        ([], "a list of them"),
        (["H100", 2], "a list of them"),
        (["H100", "H100:2"], "twice"),
    ],
)
def test_refused_forms(spec: object, message: str) -> None:
    with pytest.raises(gpus.GpuSpecError, match=message):
        gpus.parse_request(spec)  # type: ignore[arg-type]


def test_requests_of_the_first_protocol_version_still_read() -> None:
    from corral_protocol.v1 import common_pb2

    old = common_pb2.GpuRequest(models=["H100", "A100"], count=2)
    assert gpus.request_choices(old) == [("H100", 2), ("A100", 2)]
    assert gpus.describe_request(old) == "H100:2 or A100:2"


def test_the_control_plane_refuses_names_that_are_not_in_the_table() -> None:
    from corral_protocol.v1 import common_pb2

    with pytest.raises(gpus.GpuSpecError, match="unknown GPU"):
        gpus.check_request(common_pb2.GpuRequest(choices=[common_pb2.GpuChoice(model="A10X", count=1)]))
    with pytest.raises(gpus.GpuSpecError, match="between 1 and 8"):
        gpus.check_request(common_pb2.GpuRequest(choices=[common_pb2.GpuChoice(model="H100", count=9)]))


@pytest.mark.parametrize(
    ("spec", "devices"),
    [
        ("H100:8", [("NVIDIA H100 80GB HBM3", 8)]),
        ("H100:4,A100-80GB:2", [("NVIDIA H100 80GB HBM3", 4), ("NVIDIA A100-SXM4-80GB", 2)]),
        ("l4", [("NVIDIA L4", 1)]),
    ],
)
def test_simulated_specs(spec: str, devices: list[tuple[str, int]]) -> None:
    assert [(model.nvml_name, n) for model, n in gpus.parse_simulated(spec)] == devices


@pytest.mark.parametrize("spec", ["any:2", "", "H1000:2"])
def test_bad_simulated_specs(spec: str) -> None:
    with pytest.raises(gpus.GpuSpecError):
        gpus.parse_simulated(spec)
