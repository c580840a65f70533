"""Autoscaler arithmetic and service identity (placement: packages/scheduler/tests/test_placement.py)."""

from __future__ import annotations

import pytest

from corral_protocol.options import merge_options
from corral_protocol.v1 import common_pb2
from corral_scheduler import ids
from corral_scheduler.autoscaler import AutoscalerConfig, desired_containers, init_backoff_s, retry_delay_s


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
