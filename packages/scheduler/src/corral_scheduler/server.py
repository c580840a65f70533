"""Serving the control plane's three gRPC services on one port."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from corral_protocol import env, payloads
from corral_protocol.v1 import control_pb2_grpc, node_pb2_grpc, worker_pb2_grpc
from corral_scheduler.auth import AuthInterceptor
from corral_scheduler.control_plane import ControlPlane
from corral_scheduler.gateway import DEFAULT_MAX_BODY_BYTES, HttpGateway, start_gateway
from corral_scheduler.servicers import ControlServicer, NodeServicer, WorkerServicer
from corral_scheduler.store import Store
from corral_scheduler.tls import TlsFiles

# Messages up to one payload at the limit (corral_protocol.payloads) plus its envelope; Invoke
# checks the payload itself, so a caller over the limit gets INVALID_ARGUMENT naming both sizes.
SERVER_OPTIONS = [
    *payloads.grpc_message_options(receive_factor=2),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.so_reuseport", 0),
    # Fixed flow-control windows: with BDP probing, loopback's bandwidth grows them until a blob
    # stream buffers 20-50 MiB in the plane (measured); without it 10 MiB, at the same throughput.
    ("grpc.http2.bdp_probe", 0),
]


@dataclass
class RunningServer:
    server: grpc.aio.Server
    plane: ControlPlane
    port: int
    host: str
    gateway: HttpGateway | None = None
    tls: TlsFiles | None = None

    @property
    def http_url(self) -> str:
        """The web gateway's base URL; empty when it does not run."""
        return self.gateway.url if self.gateway is not None else ""

    @property
    def url(self) -> str:
        return f"{'grpcs' if self.tls is not None else 'grpc'}://{self.host}:{self.port}"

    async def stop(self, grace: float = 5.0) -> None:
        if self.gateway is not None:
            await self.gateway.stop()
        await self.plane.close()
        await self.server.stop(grace)
        self.plane.store.close()


async def serve(
    state_dir: Path, admin_token: str, host: str = "127.0.0.1", port: int = 0, http_port: int | None = None,
    tls: TlsFiles | None = None,
) -> RunningServer:
    """Start the control plane with its state in `state_dir`, listening on host:port (0 picks a port),
    and the web gateway on host:http_port (None: no gateway; 0 picks a port).

    CORRAL_HTTP_MAX_BODY (bytes, default 16 MiB) bounds web request bodies.

    With `tls`, the gRPC port and the gateway speak TLS only; an extra plaintext gRPC port on
    127.0.0.1 serves the node that runs in this process and its containers, so nothing leaves
    the machine in plaintext (a remote node's containers need TLS in the worker: not yet)."""
    store = Store(state_dir)
    max_queue = os.environ.get(env.CORRAL_MAX_QUEUE)
    if max_queue is not None and (not max_queue.isdigit() or int(max_queue) < 1):
        raise ValueError(f"{env.CORRAL_MAX_QUEUE} must be a positive integer, got {max_queue!r}")
    plane = ControlPlane(store, admin_token, max_queue_per_service=int(max_queue) if max_queue else None)
    server = grpc.aio.server(interceptors=[AuthInterceptor(admin_token, plane.is_container_token)], options=SERVER_OPTIONS)
    control_pb2_grpc.add_ControlServiceServicer_to_server(ControlServicer(plane), server)
    node_pb2_grpc.add_NodeServiceServicer_to_server(NodeServicer(plane), server)
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(WorkerServicer(plane), server)
    if tls is not None:
        cert, key = tls.read()
        bound = server.add_secure_port(f"{host}:{port}", grpc.ssl_server_credentials([(key, cert)]))
    else:
        bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port} (is the port in use?)")
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    plane.control_url = f"grpc://{connect_host}:{bound}"
    if tls is not None:
        plane.control_url = f"grpc://127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    gateway = None
    if http_port is not None:
        max_body = os.environ.get(env.CORRAL_HTTP_MAX_BODY, str(DEFAULT_MAX_BODY_BYTES))
        if not max_body.isdigit() or int(max_body) < 1:
            raise ValueError(f"{env.CORRAL_HTTP_MAX_BODY} must be a positive number of bytes, got {max_body!r}")
        # A request body becomes the input's payload: it is bounded by the payload limit too.
        gateway = await start_gateway(plane, host, http_port, min(int(max_body), payloads.max_payload_bytes()), tls)
    await server.start()
    await plane.start()
    return RunningServer(server, plane, bound, connect_host, gateway, tls)
