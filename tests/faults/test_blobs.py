"""Payloads above the inline threshold travel as content-addressed blobs: 64 MiB through `.spawn()`
and `.remote()` round-trips intact, the control plane streams them to files instead of holding
them (its peak RSS grows by far less than the payload), and hostile uploads and reads are refused."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from faults_helpers import client_for

import corral
import faults_app
from conftest import Cluster, start_cluster
from corral import _blobs, _serialization
from corral_protocol import payloads
from corral_protocol.v1 import common_pb2, control_pb2

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, corral.Client]]:
    cluster = start_cluster(tmp_path_factory.mktemp("blobs") / "home")
    client = client_for(cluster)
    try:
        with faults_app.app.run(client=client):
            yield cluster, client
    finally:
        client.close()
        cluster.stop()


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


def _blob_files(cluster: Cluster) -> set[str]:
    return {p.name for p in (cluster.home / "state" / "blobs").iterdir() if payloads.is_blob_id(p.name)}


def test_64_mib_round_trips_through_spawn_and_remote_without_the_plane_holding_it(running) -> None:  # type: ignore[no-untyped-def]
    cluster, _ = running
    blobs = faults_app.Blobs()

    def round_trips(data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        assert blobs.digest.spawn(data).get(timeout=120) == digest
        assert blobs.digest.remote(data) == digest
        assert hashlib.sha256(blobs.echo.remote(data)).hexdigest() == digest
        assert hashlib.sha256(blobs.echo.spawn(data).get(timeout=120)).hexdigest() == digest

    round_trips(os.urandom(3 * MiB))  # the same paths with small blobs first: one-time costs are paid
    before = _peak_rss_kib(cluster.process.pid)
    round_trips(os.urandom(64 * MiB))
    # Four 64 MiB transfers each way went through the plane: it streamed them to and from files.
    # Holding one would raise its peak by 64 MiB at least; gRPC's flow-control windows and chunk
    # buffers account for the growth seen (6-8 MiB).
    grown_mib = (_peak_rss_kib(cluster.process.pid) - before) / 1024
    print(f"the control plane's peak RSS grew by {grown_mib:.1f} MiB over the 64 MiB round trips")
    assert grown_mib < 32, f"the control plane's peak RSS grew by {grown_mib:.0f} MiB for 64 MiB payloads"
    assert _blob_files(cluster), "the payloads were not stored as blobs"


def _put(client: corral.Client, messages: list[control_pb2.PutBlobRequest]) -> grpc.StatusCode:
    try:
        client.stub.PutBlob(iter(messages), metadata=client.metadata)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def test_a_truncated_or_altered_upload_is_not_stored(running) -> None:  # type: ignore[no-untyped-def]
    cluster, client = running
    data = b"t" * (3 * MiB)
    blob_id = hashlib.sha256(data).hexdigest()
    truncated = [control_pb2.PutBlobRequest(blob_id=blob_id, size=len(data), chunk=data[:MiB])]
    assert _put(client, truncated) == grpc.StatusCode.INVALID_ARGUMENT
    altered = [control_pb2.PutBlobRequest(blob_id=blob_id, size=len(data), chunk=b"u" * len(data))]
    assert _put(client, altered) == grpc.StatusCode.INVALID_ARGUMENT
    assert blob_id not in _blob_files(cluster)
    assert not list((cluster.home / "state" / "blobs" / "incoming").iterdir())
    # An Invoke naming a blob that was never stored is refused, not queued.
    ghost = hashlib.sha256(b"never uploaded").hexdigest()
    args = common_pb2.Payload(format=common_pb2.PAYLOAD_FORMAT_PICKLE, blob_id=ghost, blob_size=10 * MiB)
    service_id = faults_app.Blobs()._bind()[1]
    with pytest.raises(corral.exception.NotFoundError, match="not stored"):
        client.call(client.stub.Invoke, control_pb2.InvokeRequest(service_id=service_id, method="digest", args=args))


@pytest.mark.parametrize("bad_id", ["../../secrets.key", "not-a-hash", "A" * 64, ""])
def test_a_blob_id_that_is_not_a_hash_is_refused(running, bad_id: str) -> None:  # type: ignore[no-untyped-def]
    _, client = running
    with pytest.raises(grpc.RpcError) as raised:
        for _ in client.stub.GetBlob(control_pb2.GetBlobRequest(blob_id=bad_id), metadata=client.metadata):
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _put(client, [control_pb2.PutBlobRequest(blob_id=bad_id, size=1, chunk=b"x")]) == grpc.StatusCode.INVALID_ARGUMENT


def test_a_container_may_not_read_the_blob_of_another_call(running) -> None:  # type: ignore[no-untyped-def]
    _, client = running
    blobs = faults_app.Blobs()
    secret = os.urandom(3 * MiB)
    # Another call's arguments, sent to another class's container: their blob id is the sha256 of
    # the pickled arguments (deterministic for bytes).
    other = faults_app.RetriedPayloads().size.spawn(secret)
    assert other.get(timeout=120)[1] == len(secret)
    blob_id = hashlib.sha256(_serialization.pickle_args((secret,), {})).hexdigest()
    assert blob_id in _blob_files(running[0])
    assert blobs.read_blob.remote(blob_id) == "PERMISSION_DENIED"
    # A blob the admin stored for no input at all.
    assert blobs.read_blob.remote(_blobs.put(client, os.urandom(3 * MiB))) == "PERMISSION_DENIED"
    # Nor have the plane grant it on: a call naming another call's blob in its arguments is refused,
    # with the same words whether the blob exists (and at its size) or not.
    missing = "0" * 64
    for stream in (False, True):
        probes = ((blob_id, len(_serialization.pickle_args((secret,), {}))), (blob_id, 1), (missing, 1))
        answers = [blobs.invoke_with_blob.remote(b, size, stream) for b, size in probes]
        answers[0] = answers[0].replace(blob_id, missing)  # the id aside, no difference
        answers[1] = answers[1].replace(blob_id, missing)
        assert answers == [f"PERMISSION_DENIED: the arguments of size refer to blob {missing}: there is no blob {missing} that this container may use"] * 3
    # The blobs of its own inputs it reads (the worker does, with the same token).
    own = b"z" * (3 * MiB)
    assert blobs.digest.remote(own) == hashlib.sha256(own).hexdigest()
