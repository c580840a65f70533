"""Validation of class configuration (`@app.cls(...)`, `with_options(...)`) into `ServiceOptions`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from corral.exception import InvalidError
from corral.image import Image
from corral.retries import Retries
from corral.secret import Secret
from corral_protocol import gpus
from corral_protocol.options import DEFAULT_TIMEOUT_S
from corral_protocol.v1 import common_pb2

DEFAULT_CPU = 0.125
DEFAULT_MEMORY_MIB = 128
DEFAULT_SCALEDOWN_WINDOW_S = 60.0
MAX_TIMEOUT_S = 24 * 3600.0

def parse_gpu(gpu: str | Sequence[str] | None) -> common_pb2.GpuRequest | None:
    """`"A100"`, `"H100:2"`, `"any"`, or an ordered list of fallbacks each with its own count, such
    as `["H100", "A100-80GB:2"]`; names are `corral_protocol.gpus.REQUEST_NAMES` (or `"any"`)."""
    if gpu is None:
        return None
    try:
        return gpus.parse_request(gpu)
    except gpus.GpuSpecError as err:
        raise InvalidError(str(err)) from None


def _number(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidError(f"{name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise InvalidError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return float(value)


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidError(f"{name} must be a non-negative int, got {value!r}")
    if value > 10_000:
        raise InvalidError(f"{name} must be at most 10000, got {value}")
    return value


def _request_and_limit(name: str, value: Any, low: float, high: float) -> tuple[float, float]:
    if isinstance(value, tuple):
        if len(value) != 2:
            raise InvalidError(f"{name} as a tuple must be (request, limit), got {value!r}")
        request, limit = (_number(name, v, low, high) for v in value)
        if limit < request:
            raise InvalidError(f"{name} limit {limit:g} is below its request {request:g}")
        return request, limit
    # One number is both the reservation and the hard limit (a CPU quota, a memory limit); a class
    # that sets neither has no hard limit.
    number = _number(name, value, low, high)
    return number, number


def build_options(
    *,
    image: Image | None = None,
    gpu: str | Sequence[str] | None = None,
    cpu: float | tuple[float, float] | None = None,
    memory: int | tuple[int, int] | None = None,
    secrets: Sequence[Secret] | None = None,
    timeout: float | None = None,
    retries: int | Retries | None = None,
    min_containers: int | None = None,
    max_containers: int | None = None,
    buffer_containers: int | None = None,
    scaledown_window: float | None = None,
    enable_memory_snapshot: bool | None = None,
    startup_timeout: float | None = None,
) -> common_pb2.ServiceOptions:
    """Validate configuration; only the arguments given are set in the result."""
    options = common_pb2.ServiceOptions()
    if image is not None:
        if not isinstance(image, Image):
            raise InvalidError(f"image must be a corral.Image, got {type(image).__name__}")
        options.image.CopyFrom(image.to_proto())
    if gpu is not None or cpu is not None or memory is not None:
        resources = options.resources
        gpu_request = parse_gpu(gpu)
        if gpu_request is not None:
            resources.gpu.CopyFrom(gpu_request)
        if cpu is not None:
            resources.cpu, resources.cpu_limit = _request_and_limit("cpu", cpu, 0.01, 512)
        if memory is not None:
            if isinstance(memory, float) or (isinstance(memory, tuple) and any(isinstance(m, float) for m in memory)):
                raise InvalidError(f"memory is an int number of MiB, got {memory!r}")
            request, limit = _request_and_limit("memory", memory, 1, 4 * 1024 * 1024)
            resources.memory_mib, resources.memory_limit_mib = int(request), int(limit)
    if secrets is not None:
        if isinstance(secrets, Secret) or not all(isinstance(s, Secret) for s in secrets):
            raise InvalidError("secrets must be a list of corral.Secret")
        options.secrets.extend(s.to_proto() for s in secrets)
    if timeout is not None:
        options.timeout_s = _number("timeout", timeout, 1, MAX_TIMEOUT_S)
    if startup_timeout is not None:
        options.startup_timeout_s = _number("startup_timeout", startup_timeout, 1, MAX_TIMEOUT_S)
    if retries is not None:
        if isinstance(retries, bool) or not isinstance(retries, (int, Retries)):
            raise InvalidError(f"retries must be an int or corral.Retries, got {retries!r}")
        policy = Retries.from_count(retries) if isinstance(retries, int) else retries
        options.retries.CopyFrom(
            common_pb2.RetryPolicy(
                max_retries=policy.max_retries,
                backoff_coefficient=policy.backoff_coefficient,
                initial_delay_s=policy.initial_delay,
                max_delay_s=policy.max_delay,
            )
        )
    autoscaler = common_pb2.AutoscalerSettings()
    if min_containers is not None:
        autoscaler.min_containers = _count("min_containers", min_containers)
    if max_containers is not None:
        autoscaler.max_containers = _count("max_containers", max_containers)
        if max_containers == 0:
            raise InvalidError("max_containers must be at least 1")
    if buffer_containers is not None:
        autoscaler.buffer_containers = _count("buffer_containers", buffer_containers)
    if scaledown_window is not None:
        autoscaler.scaledown_window_s = _number("scaledown_window", scaledown_window, 0.1, MAX_TIMEOUT_S)
    if autoscaler.HasField("min_containers") and autoscaler.HasField("max_containers") and autoscaler.min_containers > autoscaler.max_containers:
        raise InvalidError(f"min_containers ({autoscaler.min_containers}) is above max_containers ({autoscaler.max_containers})")
    if autoscaler.ListFields():
        options.autoscaler.CopyFrom(autoscaler)
    if enable_memory_snapshot is not None:
        if not isinstance(enable_memory_snapshot, bool):
            raise InvalidError(f"enable_memory_snapshot must be a bool, got {enable_memory_snapshot!r}")
        options.enable_memory_snapshot = enable_memory_snapshot
    return options


def class_defaults() -> common_pb2.ServiceOptions:
    """The options every class starts from before its decorator's arguments apply."""
    return common_pb2.ServiceOptions(
        resources=common_pb2.Resources(cpu=DEFAULT_CPU, memory_mib=DEFAULT_MEMORY_MIB),
        timeout_s=DEFAULT_TIMEOUT_S,
        retries=common_pb2.RetryPolicy(),
        autoscaler=common_pb2.AutoscalerSettings(
            min_containers=0, buffer_containers=0, scaledown_window_s=DEFAULT_SCALEDOWN_WINDOW_S
        ),
        concurrency=common_pb2.ConcurrencyConfig(max_inputs=1, target_inputs=1),
        enable_memory_snapshot=False,
    )


def concurrency(max_inputs: int, target_inputs: int | None = None) -> common_pb2.ConcurrencyConfig:
    if isinstance(max_inputs, bool) or not isinstance(max_inputs, int) or not 1 <= max_inputs <= 1000:
        raise InvalidError(f"max_inputs must be an int between 1 and 1000, got {max_inputs!r}")
    target = max_inputs if target_inputs is None else target_inputs
    if isinstance(target, bool) or not isinstance(target, int) or not 1 <= target <= max_inputs:
        raise InvalidError(f"target_inputs must be an int between 1 and max_inputs ({max_inputs}), got {target_inputs!r}")
    return common_pb2.ConcurrencyConfig(max_inputs=max_inputs, target_inputs=target)


def batching(max_batch_size: int, wait_ms: int) -> common_pb2.BatchingConfig:
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or not 1 <= max_batch_size <= 1000:
        raise InvalidError(f"max_batch_size must be an int between 1 and 1000, got {max_batch_size!r}")
    if isinstance(wait_ms, bool) or not isinstance(wait_ms, int) or not 0 <= wait_ms <= 10 * 60 * 1000:
        raise InvalidError(f"wait_ms must be an int between 0 and 600000, got {wait_ms!r}")
    return common_pb2.BatchingConfig(max_batch_size=max_batch_size, wait_ms=wait_ms)
