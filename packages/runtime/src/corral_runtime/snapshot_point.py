"""The worker's side of a memory snapshot: wait at the snapshot point, then take on an identity.

At the snapshot point the worker holds no connection. The node dumps it (or, later, restores a copy
of it in a new container), writes the worker's identity and environment to a file and writes that
file's path as one line on the worker's stdin, a pipe (a container isolated by runc, which sees no
node file, gets the identity itself on that line, as JSON). The worker reads it, deletes the file,
applies it, reseeds its random generators and reconnects. Secrets and per-container values arrive
only this way, after the dump, so they never enter an image.

A warm-pool worker (`corral_runtime.warm_pool`) takes on its identity the same way: started ahead
of any assignment, it imports the runtime, says so (`WARM_READY_LINE`) and waits on its stdin.
"""

from __future__ import annotations

import base64
import os
import random
import sys

from google.protobuf.message import DecodeError

from corral_protocol.v1 import worker_pb2

# The line a worker prints on stdout at its snapshot point; the node dumps it when it reads it.
SNAPSHOT_POINT_LINE = "\x00corral-snapshot-point"
# The line a warm-pool worker prints on stdout once its runtime is imported, before it waits for its
# identity (the same hand-over as a restored worker's: `wait_for_identity`).
WARM_READY_LINE = "\x00corral-warm-ready"
# The worker's argument that makes it a warm-pool worker.
WARM_ARGUMENT = "--warm"
# A stdin line that carries the identity itself (base64 of the SnapshotIdentity), not a file's path.
INLINE_PREFIX = "inline:"


class SnapshotPointError(Exception):
    """The node closed the worker's stdin or sent an unreadable identity."""


def wait_for_identity() -> worker_pb2.SnapshotIdentity:
    """Block until the node sends this process its identity; returns it.

    Blocking the event loop is deliberate: nothing may run between the dump and the new identity.
    """
    line = sys.stdin.buffer.readline()
    if not line.strip():
        raise SnapshotPointError("the node closed stdin at the snapshot point")
    path = line.decode().strip()
    identity = worker_pb2.SnapshotIdentity()
    if path.startswith(INLINE_PREFIX):
        try:
            identity.ParseFromString(base64.b64decode(path[len(INLINE_PREFIX):], validate=True))
        except (ValueError, DecodeError) as err:
            raise SnapshotPointError(f"unreadable identity: {err}") from err
        return identity
    try:
        with open(path, "rb") as f:
            identity.ParseFromString(f.read())
    except (OSError, DecodeError) as err:
        raise SnapshotPointError(f"cannot read the identity file {path}: {err}") from err
    try:
        os.unlink(path)
    except OSError:
        pass
    return identity


def await_assignment() -> None:
    """A warm-pool worker (started with `WARM_ARGUMENT`): tell the node its runtime is imported, wait
    for the container's identity and take it on. Exits the process if the node sends none."""
    print(WARM_READY_LINE, flush=True)
    try:
        apply_environment(wait_for_identity())
    except SnapshotPointError as err:
        print(f"corral worker: {err}", file=sys.stderr, flush=True)
        os._exit(1)


def apply_environment(identity: worker_pb2.SnapshotIdentity) -> None:
    """The container's environment (secrets included) and working directory, then fresh RNG seeds."""
    os.environ.update(identity.env)
    if identity.workdir:
        os.chdir(identity.workdir)
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
