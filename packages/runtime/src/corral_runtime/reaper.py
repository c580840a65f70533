"""Removes a node's runc containers and cgroups once the node is gone, however it went.

    python -m corral_runtime.reaper --runc RUNC --root STATE_DIR --scope SCOPE --cgroup-version N

The node starts it in its own session with a pipe on its stdin that only the node holds. When the
node exits (cleanly, or killed with SIGKILL), the pipe closes and the reaper deletes whatever
containers are left in the node's runc state directory, and the node's cgroups.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from corral_runtime.cgroups import Cgroups
from corral_runtime.runc import sweep


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="corral-reaper")
    parser.add_argument("--runc", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--scope", required=True)
    parser.add_argument("--cgroup-version", type=int, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the pipe's end matters
    while sys.stdin.buffer.read(4096):
        pass
    sweep(args.runc, Path(args.root), Cgroups(args.scope, args.cgroup_version))


if __name__ == "__main__":
    main()
