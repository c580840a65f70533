"""Autoscaler arithmetic, placement and service identity."""

from __future__ import annotations

import pytest

from corral_protocol.options import merge_options
from corral_protocol.v1 import common_pb2
from corral_scheduler import ids
from corral_scheduler.autoscaler import AutoscalerConfig, desired_containers, init_backoff_s, retry_delay_s
from corral_scheduler.placement import NodeCapacity, Unplaceable, choose_node


@pytest.mark.parametrize(
    ("config", "queued", "running", "expected"),
    [
        (AutoscalerConfig(), 0, 0, 0),
        (AutoscalerConfig(), 3, 1, 4),
        (AutoscalerConfig(target_inputs=10), 25, 0, 3),
        (AutoscalerConfig(max_containers=2), 10, 0, 2),
        (AutoscalerConfig(min_containers=2), 0, 0, 2),
        (AutoscalerConfig(buffer_containers=1), 1, 0, 2),
        (AutoscalerConfig(buffer_containers=1), 0, 0, 0),
        (AutoscalerConfig(min_containers=1, max_containers=1, buffer_containers=3), 5, 0, 1),
    ],
)
def test_desired_containers(config: AutoscalerConfig, queued: int, running: int, expected: int) -> None:
    assert desired_containers(config, queued, running) == expected


def test_backoffs_grow_and_are_capped() -> None:
    assert [init_backoff_s(n) for n in range(0, 9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]
    assert retry_delay_s(1, 1.0, 2.0, 10.0) == 1.0
    assert retry_delay_s(3, 1.0, 2.0, 10.0) == 4.0
    assert retry_delay_s(9, 1.0, 2.0, 10.0) == 10.0


def gpu(index: int, model: str) -> common_pb2.GpuDevice:
    return common_pb2.GpuDevice(index=index, model=model, uuid=f"GPU-{index}", memory_mib=81920)


def resources(cpu: float = 1.0, memory: int = 128, models: tuple[str, ...] = (), count: int = 0) -> common_pb2.Resources:
    res = common_pb2.Resources(cpu=cpu, memory_mib=memory)
    if count:
        res.gpu.CopyFrom(common_pb2.GpuRequest(models=list(models), count=count))
    return res


def test_best_fit_packs_onto_the_fullest_node_that_fits() -> None:
    roomy = NodeCapacity("roomy", cpu=16, memory_mib=65536)
    snug = NodeCapacity("snug", cpu=4, memory_mib=8192, cpu_reserved=2)
    assert choose_node([roomy, snug], resources(cpu=1)).node_id == "snug"
    assert choose_node([roomy, snug], resources(cpu=3)).node_id == "roomy"


def test_gpu_placement_matches_model_and_count_and_skips_used_devices() -> None:
    node = NodeCapacity("gpu", cpu=32, memory_mib=262144, gpus=[gpu(0, "NVIDIA H100 80GB HBM3"), gpu(1, "NVIDIA H100 80GB HBM3"), gpu(2, "NVIDIA A100-SXM4-80GB")])
    placement = choose_node([node], resources(models=("H100",), count=2))
    assert placement is not None and placement.gpu_indices == (0, 1)
    node.gpus_in_use.update({0, 1})
    assert choose_node([node], resources(models=("H100",), count=1)) is None
    fallback = choose_node([node], resources(models=("H100", "A100"), count=1))
    assert fallback is not None and fallback.gpu_indices == (2,)
    assert choose_node([node], resources(models=("any",), count=1)).gpu_indices == (2,)


def test_a_request_no_node_can_ever_hold_is_unplaceable_with_an_explanation() -> None:
    cpu_node = NodeCapacity("cpu-only", cpu=2, memory_mib=4096)
    with pytest.raises(Unplaceable, match="gpu=A100:1.*cpu-only.*gpus=\\[none\\]"):
        choose_node([cpu_node], resources(models=("A100",), count=1))
    with pytest.raises(Unplaceable, match="no runtime node"):
        choose_node([], resources())


def test_busy_but_capable_cluster_waits_instead_of_failing() -> None:
    node = NodeCapacity("n", cpu=2, memory_mib=4096, cpu_reserved=2)
    assert choose_node([node], resources(cpu=1)) is None


def test_snapshot_holding_node_is_preferred() -> None:
    a = NodeCapacity("a", cpu=4, memory_mib=8192, cpu_reserved=3)
    b = NodeCapacity("b", cpu=16, memory_mib=8192, snapshot_keys={"key"})
    assert choose_node([a, b], resources(cpu=1), snapshot_key="key").node_id == "b"


def test_service_ids_are_deterministic_and_distinguish_parameters_and_options() -> None:
    p1 = [common_pb2.NamedParameter(name="m", value=common_pb2.ParameterValue(string_value="gpt2"))]
    p2 = [common_pb2.NamedParameter(name="m", value=common_pb2.ParameterValue(string_value="gpt4"))]
    none = common_pb2.ServiceOptions()
    h100 = common_pb2.ServiceOptions(resources=common_pb2.Resources(gpu=common_pb2.GpuRequest(models=["H100"], count=1)))
    assert ids.service_id("ap", 1, "M", p1, none) == ids.service_id("ap", 1, "M", list(p1), common_pb2.ServiceOptions())
    assert len({ids.service_id("ap", 1, "M", p1, none), ids.service_id("ap", 1, "M", p2, none), ids.service_id("ap", 1, "M", p1, h100), ids.service_id("ap", 2, "M", p1, none)}) == 4


def test_option_overrides_replace_fields_and_add_secrets() -> None:
    base = common_pb2.ServiceOptions(
        resources=common_pb2.Resources(cpu=1, memory_mib=512, gpu=common_pb2.GpuRequest(models=["A100"], count=1)),
        timeout_s=60,
        secrets=[common_pb2.SecretRef(name="a")],
    )
    override = common_pb2.ServiceOptions(resources=common_pb2.Resources(gpu=common_pb2.GpuRequest(models=["H100"], count=1)), secrets=[common_pb2.SecretRef(name="b")])
    merged = merge_options(base, override)
    assert list(merged.resources.gpu.models) == ["H100"]
    assert merged.resources.cpu == 1 and merged.resources.memory_mib == 512 and merged.timeout_s == 60
    assert [s.name for s in merged.secrets] == ["a", "b"]
