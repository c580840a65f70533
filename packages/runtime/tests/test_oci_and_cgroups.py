"""The OCI config Corral writes, the runtime it picks, volumes, and reading cgroup usage: logic with
many cases, tested without runc (the end-to-end tests in tests/e2e/test_isolation.py run it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corral_runtime import cgroups, oci, runtimes
from corral_runtime.runc import node_scope, parse_volumes


def spec(**overrides: object) -> oci.ContainerSpec:
    base: dict[str, object] = dict(
        args=["/venv/bin/python", "-m", "corral_runtime.worker"], env={"B": "2", "A": "1"},
        binds=[oci.Bind("/usr", "/usr"), oci.Bind("/data", "/data", read_only=False)], cgroups_path="/corral-x/ct-1/ctr",
    )
    base.update(overrides)
    return oci.ContainerSpec(**base)  # type: ignore[arg-type]


def test_config_has_its_own_namespaces_but_the_host_network() -> None:
    config = oci.config_json(spec(), machine="x86_64")
    kinds = {ns["type"] for ns in config["linux"]["namespaces"]}
    assert kinds == {"pid", "mount", "ipc", "uts"}  # no "network": the host's, for direct calls (see architecture.md)


def test_config_drops_every_capability_and_sets_no_new_privileges() -> None:
    process = oci.config_json(spec(), machine="x86_64")["process"]
    assert all(process["capabilities"][kind] == [] for kind in ("bounding", "effective", "inheritable", "permitted", "ambient"))
    assert process["noNewPrivileges"] is True
    assert process["env"] == ["A=1", "B=2"] and process["cwd"] == "/tmp"


def test_config_root_is_read_only_with_a_private_tmp_and_binds_as_asked() -> None:
    config = oci.config_json(spec(tmp_size_mib=64), machine="x86_64")
    assert config["root"] == {"path": "rootfs", "readonly": True}
    mounts = {m["destination"]: m for m in config["mounts"]}
    assert mounts["/tmp"]["type"] == "tmpfs" and "size=64m" in mounts["/tmp"]["options"]
    assert "ro" in mounts["/usr"]["options"] and "rw" in mounts["/data"]["options"]
    assert mounts["/proc"]["type"] == "proc"
    assert "/proc/kcore" in config["linux"]["maskedPaths"] and "/proc/sys" in config["linux"]["readonlyPaths"]
    # No directory is masked (runc would use a tmpfs, which CRIU restores slowly); /sys ones are hidden by a bind.
    assert not any(p in config["linux"]["maskedPaths"] for p in ("/proc/acpi", "/sys/firmware"))
    hidden = oci.config_json(spec(empty_dir="/empty"), machine="x86_64")["mounts"]
    assert all(m["source"] == "/empty" for m in hidden if m["destination"] in oci.HIDDEN_SYS_DIRS)
    assert config["linux"]["cgroupsPath"] == "/corral-x/ct-1/ctr"
    assert config["linux"]["resources"]["devices"][0] == {"allow": False, "access": "rwm"}


def test_seccomp_refuses_namespaces_mounts_tracing_and_user_namespaces() -> None:
    profile = oci.seccomp_profile("x86_64")
    assert profile["architectures"][0] == "SCMP_ARCH_X86_64"
    denied = set(profile["syscalls"][0]["names"])
    assert {"mount", "unshare", "setns", "ptrace", "bpf", "keyctl", "kexec_load", "init_module"} <= denied
    clone = profile["syscalls"][1]
    assert clone["names"] == ["clone"] and clone["args"][0]["value"] == oci.CLONE_NEWUSER


def test_rootfs_recreates_merged_usr_symlinks_and_binds_a_public_etc_copy(tmp_path: Path) -> None:
    source = tmp_path / "host-etc"
    (source / "ssl" / "certs").mkdir(parents=True)
    (source / "ssl" / "certs" / "ca.pem").write_text("ca")
    (source / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (source / "shadow").write_text("root:secret-hash:::::::\n")
    (source / "localtime").symlink_to("/usr/share/zoneinfo/Etc/UTC")
    copy = tmp_path / "public-etc"
    oci.sync_public_etc(copy, etc=("passwd", "ssl/certs", "localtime", "missing"), source=source)
    assert (copy / "passwd").read_text().startswith("root:") and (copy / "ssl" / "certs" / "ca.pem").exists()
    assert os.readlink(copy / "localtime") == "/usr/share/zoneinfo/Etc/UTC"
    assert not (copy / "shadow").exists()
    (source / "passwd").write_text("changed\n")  # a changed file is copied again
    oci.sync_public_etc(copy, etc=("passwd",), source=source)
    assert (copy / "passwd").read_text() == "changed\n"
    binds = oci.prepare_rootfs(tmp_path / "rootfs", copy, system_dirs=("/usr", "/bin"))
    assert oci.Bind(str(copy), "/etc") in binds and oci.Bind("/usr", "/usr") in binds
    if Path("/bin").is_symlink():
        assert (tmp_path / "rootfs" / "bin").is_symlink()


def test_covering_binds_skip_what_a_broader_bind_shows() -> None:
    binds = oci.covering_binds(["/usr/lib/python3", "/usr", "/does/not/exist", "/tmp"], covered=["/usr"])
    assert [b.source for b in binds] == ["/tmp"]
    assert oci.overlaps("/a/b", "/a") and oci.overlaps("/a", "/a/b") and not oci.overlaps("/ab", "/a")


def test_volumes_parse_with_modes() -> None:
    assert parse_volumes("/data, /models:/m:ro,/x:rw") == [
        oci.Bind("/data", "/data", read_only=False), oci.Bind("/models", "/m", read_only=True), oci.Bind("/x", "/x", read_only=False),
    ]
    assert parse_volumes("") == []


def test_node_scope_is_per_work_dir(tmp_path: Path) -> None:
    assert node_scope(tmp_path / "a") != node_scope(tmp_path / "b")
    assert node_scope(tmp_path / "a") == node_scope(tmp_path / "a")


def test_isolation_falls_back_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    assert runtimes.detect("none").reason.startswith("turned off")
    assert runtimes.detect("auto", is_root=False).describe() == "none (needs root (run the node as root))"
    assert runtimes.detect("bogus").mode == "none"
    monkeypatch.setattr(runtimes, "find_runc", lambda: None)
    assert runtimes.detect("auto", is_root=True).reason == f"runc not found; {runtimes.RUNC_INSTALL_HINT}"


def test_cgroup_v2_usage_and_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", tmp_path)
    groups = cgroups.Cgroups("corral-test", cgroup_version=2)
    groups.create("ct-1", cpu=0.5, memory_mib=256, pids=100)
    path = tmp_path / "corral-test" / "ct-1"
    assert (path / "cpu.max").read_text() == "50000 100000"
    assert (path / "memory.max").read_text() == str(256 * 2**20)
    assert (path / "pids.max").read_text() == "100"
    (path / "memory.current").write_text("1048576\n")
    (path / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    usage = groups.usage("ct-1")
    assert (usage.memory_bytes, usage.memory_limit_bytes, usage.cpu_seconds, usage.cpu_limit) == (2**20, 256 * 2**20, 2.5, 0.5)
    assert usage.oom_kills == 1 and usage.limit_hits == 3
    assert groups.runc_path("ct-1") == "/corral-test/ct-1/ctr"
