"""Identifiers. Random ones carry a kind prefix; service ids are derived from what they bind."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

from corral_protocol.v1 import common_pb2


def new_id(prefix: str) -> str:
    return f"{prefix}-{os.urandom(8).hex()}"


def service_id(
    app_id: str,
    version: int,
    class_name: str,
    parameters: Iterable[common_pb2.NamedParameter],
    override: common_pb2.ServiceOptions,
) -> str:
    """The same class, parameter set and options always give the same id."""
    digest = hashlib.sha256()
    for part in (app_id, str(version), class_name):
        digest.update(part.encode())
        digest.update(b"\0")
    for param in sorted(parameters, key=lambda p: p.name):
        digest.update(param.SerializeToString(deterministic=True))
        digest.update(b"\1")
    digest.update(override.SerializeToString(deterministic=True))
    return f"sv-{digest.hexdigest()[:20]}"
