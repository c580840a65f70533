"""Run a worker as pid 1 of its own pid namespace and as a session leader.

Snapshot-enabled containers start this way, so that a CRIU image of the worker can be restored
many times side by side: each restore recreates pid 1 in a fresh namespace, where a restore in the
host namespace fails ("Can't fork for <pid>: File exists"). `unshare --fork` stays in the host
namespace as the worker's parent (the node waits on it), and `--kill-child` takes the worker down
with it.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path


def available() -> bool:
    return shutil.which("unshare") is not None and shutil.which("setsid") is not None


def command(argv: list[str]) -> list[str]:
    """`argv` run as pid 1 of a new pid namespace, in its own session."""
    return ["unshare", "--pid", "--fork", "--kill-child", "setsid", *argv]


def child_pid(parent: int) -> int | None:
    """The host pid of `parent`'s only child (the worker under `unshare`), once it exists."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path(f"/proc/{parent}/task/{parent}/children").read_text().split()[0])
    return None


def exec_name(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return ""
