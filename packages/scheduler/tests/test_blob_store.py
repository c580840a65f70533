"""The control plane's blob store on its own: streamed uploads checked against their declared size
and hash, who may read what, and bounded retention (no blob outlives its calls for long)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral_protocol.v1 import common_pb2, control_pb2
from corral_scheduler.blobs import GRACE_S, BlobStore, referenced_blobs
from corral_scheduler.errors import InvalidArgument, NotFound, PermissionDenied
from corral_scheduler.model import Input


def _upload(store: BlobStore, data: bytes, declared_id: str | None = None, declared_size: int | None = None,
            chunk: int = 1000, uploader: str = "", for_direct_caller: bool = False) -> str:
    blob_id = hashlib.sha256(data).hexdigest() if declared_id is None else declared_id
    size = len(data) if declared_size is None else declared_size

    async def chunks() -> AsyncIterator[control_pb2.PutBlobRequest]:
        for start in range(0, max(len(data), 1), chunk):
            head = start == 0
            yield control_pb2.PutBlobRequest(blob_id=blob_id if head else "", size=size if head else 0, chunk=data[start:start + chunk],
                                             for_direct_caller=head and for_direct_caller)

    return asyncio.run(store.put(chunks(), uploader))


def _read(store: BlobStore, blob_id: str) -> bytes:
    return b"".join(message.chunk for message in store.chunks(blob_id))


def test_an_upload_is_stored_under_its_hash_and_read_back(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    data = bytes(range(256)) * 40
    blob_id = _upload(store, data)
    assert blob_id == hashlib.sha256(data).hexdigest()
    assert store.size(blob_id) == len(data) and _read(store, blob_id) == data
    assert next(iter(store.chunks(blob_id))).size == len(data)


@pytest.mark.parametrize(("declared_size", "declared_id"), [(20_000, None), (5_000, None), (None, "0" * 64)])
def test_a_truncated_overlong_or_altered_upload_is_not_stored(tmp_path: Path, declared_size: int | None, declared_id: str | None) -> None:
    store = BlobStore(tmp_path / "blobs")
    data = b"d" * 10_000
    with pytest.raises(InvalidArgument, match="not stored|sent more"):
        _upload(store, data, declared_id, declared_size)
    assert [p.name for p in (tmp_path / "blobs").iterdir()] == ["incoming"]
    assert list((tmp_path / "blobs" / "incoming").iterdir()) == []


def test_an_upload_cut_off_by_its_client_leaves_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    data = b"c" * 10_000

    async def cut_off() -> AsyncIterator[control_pb2.PutBlobRequest]:
        yield control_pb2.PutBlobRequest(blob_id=hashlib.sha256(data).hexdigest(), size=len(data), chunk=data[:1000])
        raise ConnectionResetError("the client went away")

    with pytest.raises(ConnectionResetError):
        asyncio.run(store.put(cut_off()))
    assert list((tmp_path / "blobs" / "incoming").iterdir()) == []


@pytest.mark.parametrize("bad", ["../state.db", "x" * 64, "ABCDEF" + "0" * 58, "", "0" * 63])
def test_an_id_that_is_not_a_hash_is_refused(tmp_path: Path, bad: str) -> None:
    store = BlobStore(tmp_path / "blobs")
    with pytest.raises(InvalidArgument, match="not a blob id"):
        store.path(bad)
    with pytest.raises(InvalidArgument, match="not a blob id"):
        _upload(store, b"x", declared_id=bad)


def test_a_container_reads_only_what_it_was_granted(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    mine, theirs = _upload(store, b"mine" * 100), _upload(store, b"theirs" * 100)
    store.grant("ct-a", [common_pb2.Payload(blob_id=mine, blob_size=400)])
    store.check_reader(mine, "ct-a")
    store.check_reader(theirs, None)  # the admin token
    with pytest.raises(PermissionDenied, match="ct-a may not read"):
        store.check_reader(theirs, "ct-a")
    direct_result = _upload(store, b"result" * 100, uploader="ct-b", for_direct_caller=True)  # for a direct caller
    store.check_reader(direct_result, "ct-a")
    nested_args = _upload(store, b"args" * 100, uploader="ct-b")  # a container's own upload: not for others
    with pytest.raises(PermissionDenied):
        store.check_reader(nested_args, "ct-a")
    with pytest.raises(NotFound):
        list(store.chunks("0" * 64))


def test_a_container_may_name_in_its_call_only_a_blob_it_uploaded_or_was_granted(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    granted = _upload(store, b"granted" * 100)
    store.grant("ct-a", [common_pb2.Payload(blob_id=granted, blob_size=700)])
    own = _upload(store, b"own" * 100, uploader="ct-a")
    theirs = _upload(store, b"theirs" * 100, uploader="ct-b")
    for blob_id, size in ((granted, 700), (own, 300)):
        store.check_payload(common_pb2.Payload(blob_id=blob_id, blob_size=size), "the arguments", sender="ct-a")
    store.check_payload(common_pb2.Payload(blob_id=theirs, blob_size=600), "the arguments", sender=None)  # the admin: any
    missing = "0" * 64
    refusals = []
    for blob_id, size in ((theirs, 600), (theirs, 1), (missing, 600)):  # stored or not, right size or not: one answer
        with pytest.raises(PermissionDenied, match="no blob .* that this container may use") as refused:
            store.check_payload(common_pb2.Payload(blob_id=blob_id, blob_size=size), "the arguments", sender="ct-a")
        refusals.append(refused.value.message.replace(blob_id, "<id>"))
    assert len(set(refusals)) == 1
    with pytest.raises(InvalidArgument, match="not a blob id"):
        store.check_payload(common_pb2.Payload(blob_id="../x", blob_size=1), "the arguments", sender="ct-a")
    store.revoke("ct-a")  # a container that is gone keeps nothing
    with pytest.raises(PermissionDenied):
        store.check_payload(common_pb2.Payload(blob_id=own, blob_size=300), "the arguments", sender="ct-a")


def test_unreferenced_blobs_go_after_the_grace_and_referenced_ones_stay(tmp_path: Path) -> None:
    now = [1000.0]
    store = BlobStore(tmp_path / "blobs", clock=lambda: now[0])
    kept, dropped = _upload(store, b"kept" * 100), _upload(store, b"dropped" * 100)
    args = common_pb2.Payload(blob_id=kept, blob_size=400)
    live = [Input(call_id="fc-1", service_id="sv-1", method="run", args=args)]
    store.grant("ct-gone", [args])
    assert store.sweep(referenced_blobs(live), [], force=True) == 0  # within the grace: an Invoke may follow
    now[0] += GRACE_S + 1
    assert store.sweep(referenced_blobs(live), [], force=True) == 1
    assert store.size(kept) == 400 and store.size(dropped) is None
    assert store._granted == {}  # the grants of containers that are gone
    # Once its call is forgotten (its result read or expired), the last blob goes after the grace.
    now[0] += 1
    assert store.sweep(set(), [], force=True) == 0
    now[0] += GRACE_S + 1
    assert store.sweep(set(), [], force=True) == 1
    assert [p.name for p in (tmp_path / "blobs").iterdir()] == ["incoming"]
