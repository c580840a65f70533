"""Limits of image build steps: defaults, `CORRAL_BUILD_*` variables, `corral-node` flags over both,
bad values refused naming the setting; and the verdict "out of memory (limit N MiB)" from a cgroup's
usage, shared by build steps and containers; the limits land on a build step's cgroup."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from corral_protocol import env as corral_env
from corral_runtime import cgroups, image_build, node_cli
from corral_runtime.build_limits import BuildLimitError, BuildLimits, from_arguments
from corral_runtime.cgroups import Usage
from corral_runtime.runc import RuncRuntime

MIB = 1024 * 1024


def test_defaults_are_generous() -> None:
    limits = BuildLimits.from_env({})
    assert limits == BuildLimits(memory_mib=4096, cpu=0.0, pids=4096, step_timeout_s=1800.0)
    assert limits.describe() == "memory 4096 MiB, all CPUs, 4096 tasks, 1800 s per step"


def test_variables_set_them_and_flags_win() -> None:
    environ = {corral_env.CORRAL_BUILD_MEMORY_MIB: "64", corral_env.CORRAL_BUILD_CPU: "1.5",
               corral_env.CORRAL_BUILD_PIDS: "256", corral_env.CORRAL_BUILD_STEP_TIMEOUT_S: "3"}
    assert BuildLimits.from_env(environ) == BuildLimits(64, 1.5, 256, 3.0)
    args = node_cli.parser().parse_args(["--build-memory", "512", "--build-timeout", "60"])
    assert from_arguments(args, environ) == BuildLimits(512, 1.5, 256, 60.0)
    # A flag overrides a variable even when the variable is malformed.
    assert from_arguments(args, {corral_env.CORRAL_BUILD_MEMORY_MIB: "lots"}).memory_mib == 512


@pytest.mark.parametrize(("environ", "message"), [
    ({corral_env.CORRAL_BUILD_MEMORY_MIB: "4GiB"}, "CORRAL_BUILD_MEMORY_MIB='4GiB' is not an integer"),
    ({corral_env.CORRAL_BUILD_MEMORY_MIB: "8"}, "below the minimum of 16 MiB"),
    ({corral_env.CORRAL_BUILD_CPU: "-1"}, "number of cores >= 0"),
    ({corral_env.CORRAL_BUILD_CPU: "nan"}, "number of cores >= 0"),
    ({corral_env.CORRAL_BUILD_PIDS: "2"}, "below the minimum of 16 tasks"),
    ({corral_env.CORRAL_BUILD_STEP_TIMEOUT_S: "0"}, "seconds > 0"),
    ({corral_env.CORRAL_BUILD_STEP_TIMEOUT_S: "soon"}, "is not a number"),
])
def test_bad_values_are_refused_naming_the_setting(environ: dict[str, str], message: str) -> None:
    with pytest.raises(BuildLimitError, match=message):
        BuildLimits.from_env(environ)


def test_corral_node_refuses_a_bad_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        node_cli.main(["--server", "grpc://127.0.0.1:1", "--build-memory", "1"])
    assert "build memory limit: 1 MiB is below the minimum" in capsys.readouterr().err


def test_out_of_memory_verdict() -> None:
    killed = Usage(memory_limit_bytes=64 * MIB, oom_kills=1)
    assert killed.out_of_memory(1) == "out of memory (limit 64 MiB)"
    # cgroup v1: the kill counter went with runc's cgroup; a SIGKILL at a reached limit tells it.
    at_limit = Usage(memory_limit_bytes=64 * MIB, limit_hits=3)
    assert at_limit.out_of_memory(137) == at_limit.out_of_memory(-9) == "out of memory (limit 64 MiB)"
    assert at_limit.out_of_memory(1) == ""  # failed on its own, not killed
    assert Usage().out_of_memory(137) == ""  # killed by someone else
    assert Usage(oom_kills=1).out_of_memory(137) == "out of memory"


def test_a_build_steps_cgroup_gets_the_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", tmp_path / "cgroup")
    (tmp_path / "cgroup").mkdir()
    runtime = RuncRuntime("/usr/sbin/runc", tmp_path / "node", cgroup_version=2)
    staging = tmp_path / "layer.tmp"
    runtime.bundle_path(staging).mkdir(parents=True)
    runtime.prepare_build("build-1", staging, args=["/bin/true"], env={}, binds=[], limits=BuildLimits(64, 1.5, 128, 5.0))
    group = tmp_path / "cgroup" / runtime.scope.strip("/") / "build-1"
    assert (group / "memory.max").read_text() == str(64 * MIB)
    assert (group / "cpu.max").read_text() == "150000 100000"
    assert (group / "pids.max").read_text() == "128"
    runtime.prepare_build("build-2", staging, args=["/bin/true"], env={}, binds=[], limits=BuildLimits())
    group = group.with_name("build-2")
    assert (group / "memory.max").read_text() == str(4096 * MIB) and not (group / "cpu.max").exists()  # all CPUs


def test_a_silent_step_still_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    """While a step prints nothing (or waits on another build) the node repeats its header, so the
    control plane's relay does not take it for gone."""
    monkeypatch.setattr(image_build, "KEEPALIVE_S", 0.01)
    beats: list[int] = []

    async def silent_step() -> None:
        async with image_build._keepalive(lambda: beats.append(1)):
            await asyncio.sleep(0.2)  # its timer comes after the ticker's first ones

    asyncio.run(silent_step())
    assert beats  # tests/unit/test_image_progress.py: the display prints a repeated header once
