"""Content-addressed blobs: payloads too large to travel inline (`corral_protocol.payloads`).

A blob is a file under the control plane's home named by the sha256 of its bytes. It is written
from a `PutBlob` stream chunk by chunk into a temporary file, hashed on the way, and renamed into
place only when its size and hash match what the uploader declared: a truncated or altered upload
is never stored, and the plane never holds a whole blob in memory. `GetBlob` streams it back.

Who may read a blob: the admin token, any; a container's token, only the blobs it uploaded, those
of the inputs sent to that container and of the results its code collected (`grant`), plus the results that
containers uploaded for their direct callers (`PutBlobRequest.for_direct_caller`), which the plane
cannot attribute to a reader (their id is the hash of their content: a reader must have been told
it, or already have the content). A container's call may name only a blob it may read
(`check_payload`): otherwise the plane would grant it on to the container that runs the input.

Retention: `sweep` deletes every blob that no live call refers to (its arguments or its stored
result) once it has been unreferenced for `GRACE_S`, the time a client has between uploading a
blob and invoking with it, or between collecting a result and reading its blob. A spawned call's
blobs thus live as long as its result waits for collection (an hour at most), and no longer.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path

from corral_protocol import payloads
from corral_protocol.v1 import common_pb2, control_pb2
from corral_scheduler.errors import InvalidArgument, NotFound, PermissionDenied

log = logging.getLogger("corral.scheduler")

GRACE_S = 600.0
SWEEP_EVERY_S = 30.0


class BlobStore:
    """The blob files of one control plane, with who may read them."""

    def __init__(self, directory: Path, max_bytes: int | None = None, grace_s: float = GRACE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = directory
        self.clock = clock
        self.max_bytes = payloads.max_payload_bytes() if max_bytes is None else max_bytes
        self.grace_s = grace_s
        self._incoming = directory / "incoming"
        self._incoming.mkdir(parents=True, exist_ok=True)
        for stale in self._incoming.iterdir():  # uploads cut off by a crash
            stale.unlink(missing_ok=True)
        self._unreferenced_since: dict[str, float] = {}
        self._granted: dict[str, set[str]] = {}  # container id -> blob ids it may read
        self._direct_results: set[str] = set()
        self._swept_at = 0.0

    def path(self, blob_id: str) -> Path:
        if not payloads.is_blob_id(blob_id):
            raise InvalidArgument(f"{blob_id[:80]!r} is not a blob id (the sha256 of the blob's bytes, 64 lowercase hex digits)")
        return self.directory / blob_id

    def size(self, blob_id: str) -> int | None:
        """The stored blob's size, or None when there is no such blob."""
        try:
            return self.path(blob_id).stat().st_size
        except FileNotFoundError:
            return None

    def check_payload(self, payload: common_pb2.Payload, what: str, sender: str | None = None) -> None:
        """A payload that names a blob must name a stored one of the size it declares. `sender`:
        the container whose call carries it (None: the admin), which may name only a blob it may
        read (`may_read`: one it uploaded or was granted), and is told the same whether another
        blob exists or not, so that a container cannot probe for blobs it was never given."""
        if not payload.blob_id:
            return
        self.path(payload.blob_id)  # refuses an id that is not a hash
        if sender is not None and not self.may_read(payload.blob_id, sender):
            raise PermissionDenied(f"{what} refer to blob {payload.blob_id}: there is no blob {payload.blob_id} that this container may use")
        size = self.size(payload.blob_id)
        if size is None:
            raise NotFound(f"{what} refer to blob {payload.blob_id}, which is not stored (upload it with PutBlob first)")
        if size != payload.blob_size:
            raise InvalidArgument(f"{what} declare blob {payload.blob_id} of {payload.blob_size} bytes; it has {size}")

    # Writing ---------------------------------------------------------------------------------

    async def put(self, chunks: AsyncIterator[control_pb2.PutBlobRequest], uploader: str = "") -> str:
        """Store a streamed upload; returns its id. `uploader`: the container that sent it, if any."""
        blob_id, declared, received, for_direct_caller = "", -1, 0, False
        digest = hashlib.sha256()
        fd, temporary = -1, None
        try:
            async for chunk in chunks:
                if temporary is None:
                    blob_id, declared, for_direct_caller = chunk.blob_id, chunk.size, chunk.for_direct_caller
                    self.path(blob_id)  # refuses an id that is not a hash
                    if declared > self.max_bytes:
                        raise InvalidArgument(payloads.too_large("the blob", declared, self.max_bytes))
                    temporary = self._incoming / f"{blob_id}.{os.getpid()}.{id(digest):x}"
                    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                received += len(chunk.chunk)
                if received > declared:
                    raise InvalidArgument(f"blob {blob_id} declared {declared} bytes and sent more")
                digest.update(chunk.chunk)
                view = memoryview(chunk.chunk)
                while view:
                    view = view[os.write(fd, view):]
            if temporary is None:
                raise InvalidArgument("PutBlob sent no message")
            if received != declared:
                raise InvalidArgument(f"blob {blob_id} declared {declared} bytes and sent {received}: not stored")
            if digest.hexdigest() != blob_id:
                raise InvalidArgument(f"blob {blob_id} has sha256 {digest.hexdigest()}: not stored")
            os.close(fd)
            fd = -1
            os.replace(temporary, self.directory / blob_id)
            temporary = None
        finally:
            if fd >= 0:
                os.close(fd)
            if temporary is not None:
                temporary.unlink(missing_ok=True)
        self._unreferenced_since[blob_id] = self.clock()
        if uploader:
            self._granted.setdefault(uploader, set()).add(blob_id)  # it has the bytes: it may name them
            if for_direct_caller:
                self._direct_results.add(blob_id)
        return blob_id

    # Reading ---------------------------------------------------------------------------------

    def grant(self, container_id: str, payloads_: Iterable[common_pb2.Payload]) -> None:
        """The container may read these payloads' blobs (its input's arguments, a result it collected)."""
        ids = {p.blob_id for p in payloads_ if p.blob_id}
        if ids:
            self._granted.setdefault(container_id, set()).update(ids)

    def revoke(self, container_id: str) -> None:
        self._granted.pop(container_id, None)

    def may_read(self, blob_id: str, container_id: str | None) -> bool:
        """`container_id` None: the admin, who may read any blob; a container, the blobs it
        uploaded or was granted, and direct results."""
        return container_id is None or blob_id in self._granted.get(container_id, ()) or blob_id in self._direct_results

    def check_reader(self, blob_id: str, container_id: str | None) -> None:
        """`container_id` None: the admin. Raises PERMISSION_DENIED for a container not granted the blob."""
        if self.may_read(blob_id, container_id):
            return
        raise PermissionDenied(f"container {container_id} may not read blob {blob_id}: it belongs to no input or result of this container")

    def chunks(self, blob_id: str) -> Iterator[control_pb2.GetBlobResponse]:
        """The blob in chunks, its size on the first one."""
        path = self.path(blob_id)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise NotFound(f"there is no blob {blob_id} (it expired, or was never stored)") from None
        with handle:
            size = os.fstat(handle.fileno()).st_size
            first = True
            while True:
                data = handle.read(payloads.BLOB_CHUNK_BYTES)
                if not data and not first:
                    return
                yield control_pb2.GetBlobResponse(size=size if first else 0, chunk=data)
                first = False
                if not data:
                    return

    # Retention -------------------------------------------------------------------------------

    def sweep(self, referenced: set[str], live_containers: Iterable[str] | None = None, force: bool = False) -> int:
        """Delete blobs unreferenced for the grace period (and the grants of containers that are
        gone); returns how many blobs went."""
        now = self.clock()
        if not force and now - self._swept_at < SWEEP_EVERY_S:
            return 0
        self._swept_at = now
        if live_containers is not None:
            live = set(live_containers)
            for gone in [c for c in self._granted if c not in live]:
                del self._granted[gone]
        removed = 0
        for entry in self.directory.iterdir():
            blob_id = entry.name
            if not payloads.is_blob_id(blob_id):
                continue
            if blob_id in referenced:
                self._unreferenced_since.pop(blob_id, None)
                continue
            since = self._unreferenced_since.setdefault(blob_id, now)
            if now - since >= self.grace_s:
                entry.unlink(missing_ok=True)
                self._unreferenced_since.pop(blob_id, None)
                self._direct_results.discard(blob_id)
                for granted in self._granted.values():
                    granted.discard(blob_id)
                removed += 1
        if removed:
            log.info("removed %d blob(s) no call refers to any more", removed)
        return removed


def referenced_blobs(inputs: Iterable[object]) -> set[str]:
    """The blobs that live calls refer to: their arguments and their stored results."""
    found: set[str] = set()
    for inp in inputs:
        args = getattr(inp, "args", None)
        if args is not None and args.blob_id:
            found.add(args.blob_id)
        result = getattr(inp, "result", None)
        if result is not None and result.value.blob_id:
            found.add(result.value.blob_id)
    return found
