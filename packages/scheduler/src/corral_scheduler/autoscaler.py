"""Autoscaling arithmetic: how many containers a service wants. Pure functions, unit-tested."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class AutoscalerConfig:
    min_containers: int = 0
    max_containers: int | None = None
    buffer_containers: int = 0
    scaledown_window_s: float = 60.0
    target_inputs: int = 1


def desired_containers(config: AutoscalerConfig, queued: int, running: int) -> int:
    """ceil((queued + running) / target_inputs), plus the buffer while there is load,
    clamped to [min_containers, max_containers]."""
    load = queued + running
    wanted = math.ceil(load / max(1, config.target_inputs))
    if load > 0:
        wanted += config.buffer_containers
    wanted = max(wanted, config.min_containers)
    if config.max_containers is not None:
        wanted = min(wanted, config.max_containers)
    return wanted


def init_backoff_s(consecutive_failures: int) -> float:
    """Delay before another container may start after `@enter` failed: 1, 2, 4 ... 60 s."""
    if consecutive_failures <= 0:
        return 0.0
    return float(min(60, 2 ** (consecutive_failures - 1)))


def retry_delay_s(attempt: int, initial: float, coefficient: float, maximum: float) -> float:
    """Delay before retry number `attempt` (1-based)."""
    return min(maximum, initial * coefficient ** max(0, attempt - 1))
