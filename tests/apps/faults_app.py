"""Classes for the fault suite (tests/faults): payloads at and over the limit, a web endpoint under
load with impatient clients, and endpoints that take a typed body."""

from __future__ import annotations

import os

import corral

app = corral.App("faults")


def container_id() -> str:
    """Which container runs this code: every isolated container is pid 1 of its own pid namespace,
    so pids no longer tell containers apart (outside a container: this process's pid)."""
    return os.environ.get("CORRAL_CONTAINER_ID") or str(os.getpid())


@app.cls(cpu=(0.01, 8), max_containers=1, scaledown_window=600)
class Payloads:
    """Echoes sizes; its container's id tells a test whether the container survived (it is never
    scaled down during a test, which may sit idle past the direct port's 60 s idle timeout)."""

    @corral.method()
    def size(self, data: bytes) -> tuple[str, int]:
        return container_id(), len(data)

    @corral.method()
    def make(self, n: int) -> bytes:
        return b"x" * n

    @corral.method()
    def pid(self) -> str:
        return container_id()


@app.cls(cpu=(0.01, 8), max_containers=1, scaledown_window=600)
class Pooled:
    """A container a test kills while its caller holds pooled direct connections to it."""

    @corral.method()
    def pid(self) -> str:
        return container_id()

    @corral.method()
    async def pid_aio(self) -> str:
        return container_id()


@app.cls(cpu=(0.01, 8), max_containers=1, scaledown_window=600)
class Blobs:
    """Large payloads: their digest, and echoes; and a container that asks for another call's blob."""

    @corral.method()
    def digest(self, data: bytes) -> str:
        import hashlib

        return hashlib.sha256(data).hexdigest()

    @corral.method()
    def echo(self, data: bytes) -> bytes:
        return data

    @corral.method()
    def read_blob(self, blob_id: str) -> str:
        """GetBlob with this container's own token: the gRPC status it gets."""
        import grpc

        from corral._client import default_client
        from corral_protocol.v1 import control_pb2

        client = default_client()
        try:
            for _ in client.stub.GetBlob(control_pb2.GetBlobRequest(blob_id=blob_id), metadata=client.metadata):
                pass
        except grpc.RpcError as err:
            return err.code().name
        return "OK"

    @corral.method()
    def invoke_with_blob(self, blob_id: str, blob_size: int, stream: bool) -> str:
        """Invoke (or InvokeStream) RetriedPayloads.size with this container's token, its arguments
        naming a blob: the gRPC status it gets, and its details."""
        import grpc

        from corral import _serialization
        from corral._client import default_client
        from corral_protocol.v1 import common_pb2, control_pb2

        client = default_client()
        _, service_id = RetriedPayloads()._bind()
        args = common_pb2.Payload(format=_serialization.PICKLE, blob_id=blob_id, blob_size=blob_size)
        try:
            if stream:
                request = control_pb2.InvokeStreamRequest(service_id=service_id, method="size", args=args)
                for _ in client.stub.InvokeStream(request, metadata=client.metadata, timeout=60):
                    pass
            else:
                invoke = control_pb2.InvokeRequest(service_id=service_id, method="size", args=args, wait=True)
                client.stub.Invoke(invoke, metadata=client.metadata, timeout=60)
        except grpc.RpcError as err:
            return f"{err.code().name}: {err.details()}"
        return "OK"


@app.cls(cpu=(0.01, 8), max_containers=1, scaledown_window=60, retries=1)
class RetriedPayloads:
    """With a retry policy every input goes through the control plane (no direct path)."""

    @corral.method()
    def size(self, data: bytes) -> tuple[str, int]:
        return container_id(), len(data)


@app.cls(cpu=(0.01, 8), max_containers=2, scaledown_window=60)
@corral.concurrent(max_inputs=8)
class Web:
    """Web endpoints for the gateway and cancellation tests."""

    @corral.method()
    @corral.web_endpoint()
    def ping(self, delay_ms: int = 0) -> dict[str, str]:
        if delay_ms:
            import time

            time.sleep(delay_ms / 1000)
        return {"pid": container_id()}

    @corral.method()
    @corral.web_endpoint(method="POST")
    def takes_dict(self, data: dict) -> dict[str, object]:
        return {"keys": sorted(data)}
