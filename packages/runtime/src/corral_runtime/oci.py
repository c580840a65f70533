"""The OCI runtime configuration (`config.json`) of a Corral container, written by Corral itself.

A container gets its own pid, mount, IPC and UTS namespaces (the network stays the host's: see
"Containers" in docs/architecture.md), an empty root directory made read-only, in which the host's
system directories, the Python environment, the code bundle and the node's volumes are bound
read-only, a private tmpfs `/tmp`, no capabilities, `no_new_privs` and a seccomp profile. It runs
as uid 0 *without any capability* (CRIU needs CAP_SYS_RESOURCE to dump a process of another uid, and
this project's hosts withhold it from root), so it sees only the public part of the host's `/etc`. Resource limits live on a cgroup the node owns (`corral_runtime.cgroups`),
the parent of the one runc creates, so they outlive runc's own and tell an OOM kill afterwards.

Pure functions over plain data: unit-tested without runc.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OCI_VERSION = "1.0.2"
# The user containers run as: root of the host's user namespace, but with no capability at all, so
# it can write only where a mount lets it and read only files that are bound in.
CONTAINER_UID = 0
CONTAINER_GID = 0
# Where a container sees its code bundle.
BUNDLE_MOUNT = "/corral/bundle"
CONTAINER_CWD = "/tmp"
HOSTNAME = "corral"

# Host system directories seen read-only inside (those that exist; merged-/usr symlinks such as
# /bin -> usr/bin become the same symlinks in the container's root).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The public part of the host's /etc that programs expect (name resolution, users, TLS roots, the
# dynamic linker, time zone, alternatives). Never shadow files, private keys or the host's secrets.
ETC_ENTRIES = (
    "alternatives", "ca-certificates", "ca-certificates.conf", "debian_version", "gai.conf", "group", "host.conf",
    "hosts", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "mime.types", "nsswitch.conf", "os-release",
    "passwd", "protocols", "resolv.conf", "services", "ssl/certs", "ssl/openssl.cnf", "timezone", "fonts",
    "python3", "python3.11", "matplotlibrc", "pki",
)

# As runc's own default spec: kernel interfaces hidden or read-only inside a container.
# runc masks a directory with a tmpfs, and CRIU restores every tmpfs by extracting an archive of
# it (10-40 ms each here): so the directories runc masks under /proc are made read-only instead,
# and those under /sys are hidden behind a bind of an empty directory (`ContainerSpec.empty_dir`).
MASKED_PATHS = (
    "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
)
READONLY_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/scsi", "/proc/sys", "/proc/sysrq-trigger",
)
HIDDEN_SYS_DIRS = ("/sys/firmware", "/sys/devices/virtual/powercap")

# Syscalls a container is refused (EPERM), after Docker's default profile for a container without
# capabilities: kernel modules and keyrings, mounts and namespaces, tracing other processes, clocks,
# reboot, swap, BPF and perf. Everything else is allowed (a deny list, where Docker keeps an allow
# list: see docs/architecture.md).
DENIED_SYSCALLS = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
    "finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms", "init_module",
    "ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie",
    "mount", "mount_setattr", "move_mount", "name_to_handle_at", "nfsservctl", "open_by_handle_at",
    "open_tree", "perf_event_open", "pivot_root", "process_vm_readv", "process_vm_writev",
    "ptrace", "query_module", "quotactl", "reboot", "request_key", "setns", "settimeofday",
    "stime", "swapoff", "swapon", "syslog", "umount", "umount2", "unshare", "uselib", "userfaultfd", "ustat",
    "vhangup", "vm86", "vm86old",
)
CLONE_NEWUSER = 0x10000000
_SECCOMP_ARCHES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}


@dataclass(frozen=True)
class Bind:
    """A host path seen inside the container at `destination`."""

    source: str
    destination: str
    read_only: bool = True


@dataclass
class ContainerSpec:
    """What `config_json` needs to describe one container."""

    args: list[str]
    env: dict[str, str]
    binds: list[Bind]
    cgroups_path: str
    hostname: str = HOSTNAME
    cwd: str = CONTAINER_CWD
    uid: int = CONTAINER_UID
    gid: int = CONTAINER_GID
    devices: list[str] = field(default_factory=list)  # host device nodes passed through (GPUs)
    tmp_size_mib: int = 0  # 0: the kernel's default (half the RAM, charged to the memory limit)
    empty_dir: str = ""  # an empty host directory bound over HIDDEN_SYS_DIRS; "" leaves them visible


def seccomp_profile(machine: str | None = None) -> dict[str, Any]:
    """The seccomp profile: `DENIED_SYSCALLS` fail with EPERM, `clone` with CLONE_NEWUSER too (a
    user namespace would hand the process capabilities again), and `clone3` with ENOSYS (its flags
    are behind a pointer seccomp cannot read; libc then falls back to `clone`)."""
    arch = machine or platform.machine()
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": _SECCOMP_ARCHES.get(arch, []),
        "syscalls": [
            {"names": list(DENIED_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 0, "value": CLONE_NEWUSER, "valueTwo": CLONE_NEWUSER, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        ],
    }


def _device(path: str) -> dict[str, Any] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    kind = "c" if (st.st_mode & 0o170000) == 0o020000 else "b"
    return {"path": path, "type": kind, "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
            "fileMode": st.st_mode & 0o777, "uid": 0, "gid": 0}


def config_json(spec: ContainerSpec, machine: str | None = None) -> dict[str, Any]:
    """The OCI runtime config of one container (runc reads it as `config.json` in the bundle)."""
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    ]
    if spec.empty_dir:
        mounts += [{"destination": path, "type": "bind", "source": spec.empty_dir, "options": ["rbind", "nosuid", "nodev", "noexec", "ro"]}
                   for path in HIDDEN_SYS_DIRS if os.path.isdir(path)]
    tmp_options = ["nosuid", "nodev", "mode=1777"] + ([f"size={spec.tmp_size_mib}m"] if spec.tmp_size_mib else [])
    mounts.append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": tmp_options})
    for bind in spec.binds:
        options = ["rbind", "nosuid", "nodev"] + (["ro"] if bind.read_only else ["rw"])
        mounts.append({"destination": bind.destination, "type": "bind", "source": bind.source, "options": options})
    devices = [d for d in (_device(path) for path in spec.devices) if d is not None]
    device_rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    device_rules += [{"allow": True, "type": d["type"], "major": d["major"], "minor": d["minor"], "access": "rwm"} for d in devices]
    no_caps: list[str] = []
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": spec.uid, "gid": spec.gid},
            "args": spec.args,
            "env": [f"{k}={v}" for k, v in sorted(spec.env.items())],
            "cwd": spec.cwd,
            "capabilities": {"bounding": no_caps, "effective": no_caps, "inheritable": no_caps, "permitted": no_caps, "ambient": no_caps},
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {
            # The node's cgroup (corral_runtime.cgroups) holds the limits; runc's own sits below it.
            "cgroupsPath": spec.cgroups_path,
            "resources": {"devices": device_rules},
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}],
            "devices": devices,
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            "seccomp": seccomp_profile(machine),
        },
    }


def sync_public_etc(target: Path, etc: tuple[str, ...] = ETC_ENTRIES, source: Path = Path("/etc")) -> None:
    """Keep `target` a copy of the public part of the host's /etc (`etc`): files copied when their
    size or mtime changed (so resolv.conf and hosts stay current, even for running containers, which
    see `target` through one bind), directories copied once, symlinks recreated. One bind of this
    copy costs a container start far less than a bind per entry (measured: ~10 ms for 20 entries)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in etc:
        src, dst = source / name, target / name
        if not (src.exists() or src.is_symlink()):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            link = os.readlink(src)
            if not dst.is_symlink() or os.readlink(dst) != link:
                tmp = dst.with_name(f".{dst.name}.new")
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                tmp.symlink_to(link)
                os.replace(tmp, dst)
        elif src.is_dir():
            if not dst.exists():
                shutil.copytree(src, dst, symlinks=True)
        else:
            st = src.stat()
            with contextlib.suppress(FileNotFoundError):
                current = dst.stat()
                if (current.st_size, current.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
                    continue
            tmp = dst.with_name(f".{dst.name}.new")
            shutil.copy2(src, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dst)


def prepare_rootfs(rootfs: Path, public_etc: Path, system_dirs: tuple[str, ...] = SYSTEM_DIRS) -> list[Bind]:
    """Create the container's empty root directory; returns the read-only binds of the host's
    system directories and of `public_etc` (see `sync_public_etc`) at /etc. A merged-/usr symlink
    (/bin -> usr/bin) is recreated as the same symlink."""
    rootfs.mkdir(parents=True, exist_ok=True)
    binds = [Bind(str(public_etc), "/etc")]
    for path in system_dirs:
        if os.path.islink(path):
            link = rootfs / path.lstrip("/")
            if not link.is_symlink():
                link.symlink_to(os.readlink(path))
        elif os.path.isdir(path):
            binds.append(Bind(path, path))
    return binds


def covering_binds(paths: list[str], covered: list[str]) -> list[Bind]:
    """Read-only binds (at the same path) of `paths`, skipping any that a broader one, or one of
    `covered`, already shows, and those that do not exist."""
    chosen: list[str] = []
    for path in sorted({os.path.normpath(p) for p in paths if p and os.path.isdir(p)}, key=len):
        if any(path == c or path.startswith(c.rstrip("/") + "/") for c in [*covered, *chosen]):
            continue
        chosen.append(path)
    return [Bind(path, path) for path in chosen]


def overlaps(path: str, other: str) -> bool:
    """Whether one of the two paths is the other or inside it."""
    a, b = os.path.normpath(path), os.path.normpath(other)
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")
