"""The one payload policy: how large an input's arguments and a call's result may be, and which
of them travel inline and which as content-addressed blobs.

Every path enforces the same limit, `max_payload_bytes()` (default `DEFAULT_MAX_PAYLOAD_BYTES`,
2 GiB; `CORRAL_MAX_PAYLOAD_BYTES` changes it): the SDK before it sends (`.remote()`, `.spawn()`,
`.map()`), the control plane on `Invoke` and `PutBlob`, the container's direct port, the worker on
results, and the web gateway on request bodies.

A payload above `BLOB_THRESHOLD_BYTES` (2 MiB, as Modal does) travels as a blob: the sender
streams it to the control plane (`PutBlob`, a file named by its sha256) and the message carries
only `Payload.blob_id` and `blob_size`; the receiver streams it back (`GetBlob`). Inline payloads
(web bodies, third-party clients) are bounded by `inline_limit()`; every gRPC channel and the
direct framing accept messages of `message_limit()` bytes (the inline limit plus room for the
envelope), so an inline payload at its limit never breaks a connection, and one over it is refused
with `too_large()`'s message, never by a transport error that kills a container.

Example:
    from corral_protocol import payloads

    if len(data) > payloads.max_payload_bytes():
        raise ValueError(payloads.too_large("the arguments of Model.predict", len(data)))
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from corral_protocol import env
from corral_protocol.v1 import common_pb2

DEFAULT_MAX_PAYLOAD_BYTES = 2 * 1024 * 1024 * 1024
"""The default bound on an input's serialized arguments and on a serialized result."""
BLOB_THRESHOLD_BYTES = 2 * 1024 * 1024
"""Payloads larger than this travel as blobs (`Payload.blob_id`) rather than inline in a message."""
MAX_INLINE_BYTES = 64 * 1024 * 1024
"""The largest payload that may travel inline (a web body, a third-party client's arguments)."""
BLOB_CHUNK_BYTES = 1024 * 1024
"""The size of the chunks a blob streams in."""
ENVELOPE_BYTES = 1024 * 1024
"""Room for what travels around a payload in one message (ids, method, HTTP headers, traceback)."""


def max_payload_bytes(environ: Mapping[str, str] | None = None) -> int:
    """The payload limit of this process: `CORRAL_MAX_PAYLOAD_BYTES`, or the default."""
    raw = (os.environ if environ is None else environ).get(env.CORRAL_MAX_PAYLOAD_BYTES)
    if raw is None or raw == "":
        return DEFAULT_MAX_PAYLOAD_BYTES
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{env.CORRAL_MAX_PAYLOAD_BYTES} must be a positive number of bytes, got {raw!r}")
    return int(raw)


def inline_limit(environ: Mapping[str, str] | None = None) -> int:
    """The largest payload that may travel inline: `MAX_INLINE_BYTES`, or the payload limit if lower."""
    return min(max_payload_bytes(environ), MAX_INLINE_BYTES)


def message_limit(environ: Mapping[str, str] | None = None) -> int:
    """The largest gRPC message or direct frame to accept: one inline payload at its limit plus its envelope."""
    return inline_limit(environ) + ENVELOPE_BYTES


def is_blob_id(text: str) -> bool:
    """A blob id is the sha256 of the blob's bytes in lowercase hex, and nothing else (it names a file)."""
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def size_of(payload: common_pb2.Payload) -> int:
    """The size of a payload's serialized bytes, inline or as a blob."""
    return payload.blob_size if payload.blob_id else len(payload.data)


def grpc_message_options(environ: Mapping[str, str] | None = None, receive_factor: int = 1) -> list[tuple[str, int]]:
    """gRPC channel/server options that let an inline payload at its limit through in both directions.

    A server passes `receive_factor=2`: a request up to twice the limit still reaches the servicer,
    which refuses it with INVALID_ARGUMENT naming both sizes (a client configured with a larger
    limit than the server's gets a clear error); only beyond that does gRPC itself refuse it
    (RESOURCE_EXHAUSTED), before the message is held in memory."""
    limit = message_limit(environ)
    return [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit * receive_factor)]


def human(size: int) -> str:
    """`5.0 MiB`, `64 MiB`, `12 bytes`."""
    if size < 1024 * 1024:
        return f"{size} bytes"
    mib = size / (1024 * 1024)
    return f"{mib:.0f} MiB" if mib == int(mib) else f"{mib:.1f} MiB"


def too_large(what: str, size: int, limit: int | None = None) -> str:
    """The message for a payload over the limit, naming both sizes and the setting."""
    limit = max_payload_bytes() if limit is None else limit
    return (
        f"{what} is {human(size)} ({size} bytes) serialized, over the {human(limit)} ({limit} bytes) payload limit; "
        f"pass large data by reference (a file or object store path), or raise {env.CORRAL_MAX_PAYLOAD_BYTES} "
        "on the server and its clients"
    )
