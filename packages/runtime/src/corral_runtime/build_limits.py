"""The limits of an image build step's sandboxed container: memory, CPU, tasks and time.

A node takes them from `corral-node --build-memory/--build-cpu/--build-pids/--build-timeout`, whose
defaults come from the `CORRAL_BUILD_*` variables (which the node `corral up` embeds reads too),
else from `BuildLimits`' own defaults. A step beyond its memory is killed by the kernel and fails
naming the step and "out of memory (limit N MiB)"; a step beyond its time is killed and fails
naming the limit. Either way no layer is kept.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from corral_protocol import env as corral_env

DEFAULT_MEMORY_MIB = 4096
DEFAULT_PIDS = 4096
DEFAULT_STEP_TIMEOUT_S = 1800.0
MIN_MEMORY_MIB = 16  # below this not even `sh` starts; a smaller value is a typo


class BuildLimitError(ValueError):
    """A build limit that is not a number or out of range; the message names the setting."""


@dataclass(frozen=True)
class BuildLimits:
    """Cgroup limits and the time limit of each image build step (`cpu` 0: all the node's CPUs)."""

    memory_mib: int = DEFAULT_MEMORY_MIB
    cpu: float = 0.0
    pids: int = DEFAULT_PIDS
    step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.memory_mib < MIN_MEMORY_MIB:
            raise BuildLimitError(f"build memory limit: {self.memory_mib} MiB is below the minimum of {MIN_MEMORY_MIB} MiB")
        if not (math.isfinite(self.cpu) and self.cpu >= 0):
            raise BuildLimitError(f"build CPU limit: {self.cpu} must be a number of cores >= 0 (0: all)")
        if self.pids < 16:
            raise BuildLimitError(f"build pids limit: {self.pids} is below the minimum of 16 tasks")
        if not (math.isfinite(self.step_timeout_s) and self.step_timeout_s > 0):
            raise BuildLimitError(f"build step time limit: {self.step_timeout_s} must be a number of seconds > 0")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> BuildLimits:
        """The limits the `CORRAL_BUILD_*` variables set, the defaults for those unset."""
        return from_arguments(argparse.Namespace(build_memory=None, build_cpu=None, build_pids=None, build_timeout=None), environ)

    def describe(self) -> str:
        cpu = f"{self.cpu:g} CPU" if self.cpu else "all CPUs"
        return f"memory {self.memory_mib} MiB, {cpu}, {self.pids} tasks, {self.step_timeout_s:g} s per step"


def _number(environ: Mapping[str, str], name: str, kind: type[int] | type[float], default: int | float) -> int | float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise BuildLimitError(f"{name}={raw!r} is not {'an integer' if kind is int else 'a number'}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`corral-node`'s flags for the limits (their defaults: the variables, else BuildLimits')."""
    group = parser.add_argument_group("image builds")
    group.add_argument("--build-memory", type=int, default=None, metavar="MIB",
                       help=f"memory limit of a build step's container (default {DEFAULT_MEMORY_MIB}, "
                            f"or ${corral_env.CORRAL_BUILD_MEMORY_MIB})")
    group.add_argument("--build-cpu", type=float, default=None, metavar="CORES",
                       help=f"CPU quota of a build step's container; 0: all CPUs (default 0, or ${corral_env.CORRAL_BUILD_CPU})")
    group.add_argument("--build-pids", type=int, default=None, metavar="N",
                       help=f"most tasks in a build step's container (default {DEFAULT_PIDS}, or ${corral_env.CORRAL_BUILD_PIDS})")
    group.add_argument("--build-timeout", type=float, default=None, metavar="SECONDS",
                       help=f"time limit of one build step (default {DEFAULT_STEP_TIMEOUT_S:g}, "
                            f"or ${corral_env.CORRAL_BUILD_STEP_TIMEOUT_S})")


def from_arguments(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> BuildLimits:
    """The limits of `add_arguments`' flags, each unset one from the environment or the default."""
    def pick(flag: int | float | None, name: str, kind: type[int] | type[float], default: int | float) -> int | float:
        return _number(environ, name, kind, default) if flag is None else flag

    return BuildLimits(
        memory_mib=int(pick(args.build_memory, corral_env.CORRAL_BUILD_MEMORY_MIB, int, DEFAULT_MEMORY_MIB)),
        cpu=float(pick(args.build_cpu, corral_env.CORRAL_BUILD_CPU, float, 0.0)),
        pids=int(pick(args.build_pids, corral_env.CORRAL_BUILD_PIDS, int, DEFAULT_PIDS)),
        step_timeout_s=float(pick(args.build_timeout, corral_env.CORRAL_BUILD_STEP_TIMEOUT_S, float, DEFAULT_STEP_TIMEOUT_S)),
    )
