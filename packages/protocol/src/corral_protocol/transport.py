"""How every Corral process reaches a control plane: the URL's scheme and the certificates it trusts.

The SDK, the node daemon and the worker inside a container all connect the same way:

- `grpc://host:port` (or a bare `host:port`) is plaintext; `grpcs://host:port` is TLS.
- For TLS, the certificates to trust come from a PEM file (`CORRAL_TLS_CA`, or an explicit path),
  else from PEM text in `CORRAL_TLS_CA_PEM` (what a node gives its containers, which cannot read
  the node's files), else the system's roots.

Example:
    address = server_address("grpcs://10.0.0.5:7470")
    credentials = channel_credentials(trusted_roots(None, os.environ))
    channel = grpc.secure_channel(address.target, credentials)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import grpc

from corral_protocol import env

PLAINTEXT_SCHEME = "grpc://"
TLS_SCHEME = "grpcs://"


class TransportError(ValueError):
    """A server URL or a certificate file that cannot be used; the message names it."""


@dataclass(frozen=True)
class ServerAddress:
    """Where a control plane listens: gRPC's `host:port` target, and whether it speaks TLS."""

    target: str
    tls: bool


def server_address(url: str) -> ServerAddress:
    """`grpc://host:port` or a bare `host:port` is plaintext; `grpcs://host:port` is TLS."""
    if url.startswith(TLS_SCHEME):
        return ServerAddress(url[len(TLS_SCHEME):], True)
    if url.startswith(PLAINTEXT_SCHEME):
        return ServerAddress(url[len(PLAINTEXT_SCHEME):], False)
    if "://" in url:
        raise TransportError(f"server URL {url!r} must start with {PLAINTEXT_SCHEME} or {TLS_SCHEME}")
    return ServerAddress(url, False)


def trusted_roots(ca_file: str | None, environ: Mapping[str, str] = os.environ) -> bytes | None:
    """The PEM certificates to trust: `ca_file`, else `CORRAL_TLS_CA`'s file, else the text of
    `CORRAL_TLS_CA_PEM`; None means the system's roots."""
    path = ca_file or environ.get(env.CORRAL_TLS_CA)
    if path:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as err:
            raise TransportError(f"cannot read the TLS certificate to trust ({path}): {err.strerror}") from None
    pem = environ.get(env.CORRAL_TLS_CA_PEM)
    return pem.encode() if pem else None


def channel_credentials(roots: bytes | None) -> grpc.ChannelCredentials:
    """TLS credentials that trust `roots` (PEM), or the system's roots when None."""
    return grpc.ssl_channel_credentials(root_certificates=roots) if roots else grpc.ssl_channel_credentials()
