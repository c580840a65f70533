"""The node's and the worker's channel to the control plane, plaintext or TLS by the URL's scheme,
and what to tell the operator when a node cannot connect for a reason no retry will fix.

    channel = open_channel("grpcs://10.0.0.5:7470", roots)   # roots: trusted PEM, None = system
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import Any

import grpc

from corral_protocol import transport

_PROBE_TIMEOUT_S = 3.0
# The node daemon's channel. A network cut closes no connection and fails no write for many minutes
# (TCP retransmits with backoff), so the daemon pings to notice one (the plane accepts a ping every
# 10 s: corral_scheduler.server.SERVER_OPTIONS), and once it has noticed it retries connecting at
# least every 5 s instead of gRPC's backoff of up to 120 s: when the network is back, it registers
# again within seconds and the plane stops what it still runs (measured: tools/bench/node_network_cut.py).
NODE_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 15_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5_000),
    ("grpc.min_reconnect_backoff_ms", 5_000),  # also the connect timeout: a SYN lost to the cut is resent soon
]
# How BoringSSL, under gRPC, words a certificate it cannot verify or one for another name.
_CERTIFICATE_FAILURES = ("CERTIFICATE_VERIFY_FAILED", "certificate signature failure", "BAD_SIGNATURE",
                         "unable to get local issuer certificate", "self signed certificate", "is not in peer certificate")


def open_channel(url: str, roots: bytes | None, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    """An asyncio channel to the control plane at `url`: TLS trusting `roots` for `grpcs://`."""
    address = transport.server_address(url)
    if address.tls:
        return grpc.aio.secure_channel(address.target, transport.channel_credentials(roots), options=list(options))
    return grpc.aio.insecure_channel(address.target, options=list(options))


async def speaks_tls(target: str) -> bool:
    """Whether the server at `host:port` completes a TLS handshake (its certificate unchecked: this
    only tells a plaintext client that it knocked on a TLS port)."""
    host, _, port = target.rpartition(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port), ssl=context), timeout=_PROBE_TIMEOUT_S,
        )
    except (OSError, ValueError, asyncio.TimeoutError):
        return False
    writer.transport.abort()  # no TLS close_notify exchange: a gRPC server never answers one
    return True


async def permanent_failure(url: str, tls_ca: str | None, details: str) -> str | None:
    """Why the control plane at `url` will never accept this connection as configured, or None when
    the failure may pass (the control plane is down or restarting). `details`: gRPC's message."""
    address = transport.server_address(url)
    if not address.tls and await speaks_tls(address.target):
        return (
            f"the control plane at {url} speaks TLS and refuses plaintext: connect with --server "
            f"{transport.TLS_SCHEME}{address.target} and --tls-ca FILE (its certificate, unless a system root signs it)"
        )
    if address.tls and "WRONG_VERSION_NUMBER" in details:
        return f"the control plane at {url} does not speak TLS: connect with --server {transport.PLAINTEXT_SCHEME}{address.target}"
    if address.tls and any(sign in details for sign in _CERTIFICATE_FAILURES):
        trusted = f"--tls-ca {tls_ca}" if tls_ca else "the system's roots (no --tls-ca given)"
        return f"the TLS certificate of the control plane at {url} is not trusted by {trusted}: {details}"
    return None
