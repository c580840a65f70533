"""Serving the control plane's three gRPC services on one port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from corral_protocol import APP_HEARTBEAT_INTERVAL_S, env, payloads
from corral_protocol.v1 import control_pb2_grpc, node_pb2_grpc, worker_pb2_grpc
from corral_scheduler.auth import AuthInterceptor
from corral_scheduler.control_plane import ControlPlane
from corral_scheduler.core import APP_HEARTBEAT_TIMEOUT_S
from corral_scheduler.gateway import DEFAULT_MAX_BODY_BYTES, HttpGateway, start_gateway
from corral_scheduler.join_tokens import JoinTokenBook
from corral_scheduler.leadership import DEFAULT_TTL_S, Leadership, new_holder_id
from corral_scheduler.nodes import MAX_NODE_TIMEOUT_S, NODE_TIMEOUT_S
from corral_scheduler.servicers import ControlServicer, NodeServicer, WorkerServicer
from corral_scheduler.state_url import PostgresState, StateLocation
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
log = logging.getLogger("corral.scheduler")
# A deposed leader exits at once (EX_TEMPFAIL), as a kill -9 would: a supervisor restarts it as a standby.
LEASE_LOST_EXIT_CODE = 75


def _step_down(reason: str) -> None:
    log.critical("stepping down: %s; this control plane exits without touching the state again", reason)
    logging.shutdown()
    os._exit(LEASE_LOST_EXIT_CODE)


def _seconds_from_env(name: str, default: float, low: float, high: float) -> float:
    """Setting `name` from the environment, checked: seconds in [low, high] (above 0); `default` unset."""
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 < seconds and low <= seconds <= high):
        raise ValueError(f"{name} must be a number of seconds above 0, at least {low:g} and at most {high:g}, got {value!r}")
    return seconds


def node_timeout_from_env() -> float:
    """CORRAL_NODE_TIMEOUT_S, checked: a positive number of seconds (default `NODE_TIMEOUT_S`)."""
    return _seconds_from_env(env.CORRAL_NODE_TIMEOUT_S, NODE_TIMEOUT_S, 0.0, MAX_NODE_TIMEOUT_S)


def app_heartbeat_timeout_from_env() -> float:
    """CORRAL_APP_HEARTBEAT_TIMEOUT_S, checked: at least two client heartbeats (default 60 s)."""
    return _seconds_from_env(env.CORRAL_APP_HEARTBEAT_TIMEOUT_S, APP_HEARTBEAT_TIMEOUT_S,
                             2 * APP_HEARTBEAT_INTERVAL_S, 24 * 3600.0)


@dataclass
class RunningServer:
    server: grpc.aio.Server
    plane: ControlPlane
    port: int
    host: str
    gateway: HttpGateway | None = None
    tls: TlsFiles | None = None
    leadership: Leadership | None = None
    lease_keeper: asyncio.Task[None] | None = None

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
        if self.lease_keeper is not None:
            self.lease_keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.lease_keeper
        await self.plane.close()
        await self.server.stop(grace)
        if self.leadership is not None:
            self.leadership.release()
        self.plane.store.close()


async def serve(
    state_dir: Path, admin_token: str, host: str = "127.0.0.1", port: int = 0, http_port: int | None = None,
    tls: TlsFiles | None = None, state_location: StateLocation | None = None,
    on_lease_lost: Callable[[str], None] = _step_down, join_tokens: JoinTokenBook | None = None,
) -> RunningServer:
    """Start the control plane with its state in `state_dir`, listening on host:port (0 picks a port),
    and the web gateway on host:http_port (None: no gateway; 0 picks a port).

    CORRAL_HTTP_MAX_BODY (bytes, default 16 MiB) bounds web request bodies; CORRAL_NODE_TIMEOUT_S
    (default 10) is how long a silent node has before it is lost.

    With `tls`, the gRPC port and the gateway speak TLS only; an extra plaintext gRPC port on
    127.0.0.1 serves the node that runs in this process and its containers, so nothing leaves
    the machine in plaintext; remote nodes and their containers connect with TLS.

    `state_location` (`corral_scheduler.state_url.parse_state_url`): where the state is, default
    SQLite files in `state_dir`; `state_dir` keeps the bundle cache then. On PostgreSQL the plane
    first waits, as a standby, for the leader lease (CORRAL_LEADER_LEASE_S, default 10 s), and
    `on_lease_lost` (default: exit at once) runs if it is ever lost.

    `join_tokens`: the book of join tokens that let machines join as nodes (None: only the admin
    token does)."""
    store = Store(state_dir, location=state_location)
    leadership = None
    keeper = None
    if isinstance(store.location, PostgresState):
        leadership = Leadership(store.lease, new_holder_id(), _lease_ttl_s())
        await leadership.acquire()
        # Renew from now on: a slow start must not let a standby take the lease over meanwhile.
        keeper = asyncio.create_task(leadership.keep(on_lease_lost), name="corral-leader-lease")
    try:
        return await _start(store, admin_token, host, port, http_port, tls, join_tokens, leadership, keeper)
    except BaseException:
        # The plane did not start: a standby takes the lease over at once instead of after its TTL.
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        if leadership is not None:
            leadership.release()
        raise


async def _start(
    store: Store, admin_token: str, host: str, port: int, http_port: int | None, tls: TlsFiles | None,
    join_tokens: JoinTokenBook | None, leadership: Leadership | None, keeper: asyncio.Task[None] | None,
) -> RunningServer:
    max_queue = os.environ.get(env.CORRAL_MAX_QUEUE)
    if max_queue is not None and (not max_queue.isdigit() or int(max_queue) < 1):
        raise ValueError(f"{env.CORRAL_MAX_QUEUE} must be a positive integer, got {max_queue!r}")
    plane = ControlPlane(store, admin_token, max_queue_per_service=int(max_queue) if max_queue else None,
                         node_timeout_s=node_timeout_from_env(), app_heartbeat_timeout_s=app_heartbeat_timeout_from_env())
    server = grpc.aio.server(interceptors=[AuthInterceptor(admin_token, plane.is_container_token, join_tokens)], options=SERVER_OPTIONS)
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
    return RunningServer(server, plane, bound, connect_host, gateway, tls, leadership, keeper)


def _lease_ttl_s() -> float:
    raw = os.environ.get(env.CORRAL_LEADER_LEASE_S)
    if raw is None:
        return DEFAULT_TTL_S
    try:
        ttl = float(raw)
    except ValueError:
        ttl = 0.0
    if not 0 < ttl <= 3600:
        raise ValueError(f"{env.CORRAL_LEADER_LEASE_S} must be a number of seconds in (0, 3600], got {raw!r}")
    return ttl
