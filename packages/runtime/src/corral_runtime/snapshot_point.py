"""The worker's side of a memory snapshot: wait at the snapshot point, then take on an identity.

At the snapshot point the worker holds no connection. The node dumps it (or, later, restores a copy
of it in a new container), writes the worker's identity and environment to a file and writes that
file's path as one line on the worker's stdin, a pipe (a container isolated by runc, which sees no
node file, gets the identity itself on that line, as JSON). The worker reads it, deletes the file,
applies it, reseeds its random generators and reconnects. Secrets and per-container values arrive
only this way, after the dump, so they never enter an image.
"""

from __future__ import annotations

import json
import os
import random
import sys
from typing import Any

# The line a worker prints on stdout at its snapshot point; the node dumps it when it reads it.
SNAPSHOT_POINT_LINE = "\x00corral-snapshot-point"


class SnapshotPointError(Exception):
    """The node closed the worker's stdin or sent an unreadable identity."""


def wait_for_identity() -> dict[str, Any]:
    """Block until the node sends this process its identity; returns it.

    Blocking the event loop is deliberate: nothing may run between the dump and the new identity.
    """
    line = sys.stdin.buffer.readline()
    if not line.strip():
        raise SnapshotPointError("the node closed stdin at the snapshot point")
    path = line.decode().strip()
    if path.startswith("{"):
        try:
            inline: dict[str, Any] = json.loads(path)
        except ValueError as err:
            raise SnapshotPointError(f"unreadable identity: {err}") from err
        return inline
    try:
        with open(path) as f:
            identity: dict[str, Any] = json.load(f)
    except (OSError, ValueError) as err:
        raise SnapshotPointError(f"cannot read the identity file {path}: {err}") from err
    try:
        os.unlink(path)
    except OSError:
        pass
    return identity


def apply_environment(identity: dict[str, Any]) -> None:
    """The container's environment (secrets included) and working directory, then fresh RNG seeds."""
    os.environ.update(identity.get("env", {}))
    workdir = identity.get("workdir")
    if workdir:
        os.chdir(workdir)
    reseed()


def reseed() -> None:
    """Every restored copy of an image starts with the same RNG state; give each its own."""
    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        try:
            numpy.random.seed()
        except Exception:  # a broken numpy must not keep the container from serving
            pass
