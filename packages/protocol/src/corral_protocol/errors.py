"""Error reasons: why a control-plane RPC failed, beyond its gRPC status code.

The server names the reason (a `common_pb2.ErrorReason` value's name) in the trailing metadata key
`corral-error-reason`; clients read it with `error_reason` instead of matching the message text.

Example:
    except grpc.RpcError as err:
        if error_reason(err.trailing_metadata()) == common_pb2.ERROR_REASON_SERVICE_GONE:
            ...  # bind the class again
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from corral_protocol.v1 import common_pb2

ERROR_REASON_METADATA_KEY = "corral-error-reason"


def reason_metadata(reason: common_pb2.ErrorReason.ValueType) -> tuple[tuple[str, str], ...]:
    """The trailing metadata that names `reason` (none for ERROR_REASON_UNSPECIFIED)."""
    if reason == common_pb2.ERROR_REASON_UNSPECIFIED:
        return ()
    return ((ERROR_REASON_METADATA_KEY, common_pb2.ErrorReason.Name(reason)),)


def error_reason(trailing_metadata: Iterable[Any] | None) -> common_pb2.ErrorReason.ValueType:
    """The reason named in an RPC's trailing metadata; ERROR_REASON_UNSPECIFIED when there is none
    (or one this client does not know, from a newer server)."""
    for item in trailing_metadata or ():
        key, value = (item.key, item.value) if hasattr(item, "key") else item
        if key == ERROR_REASON_METADATA_KEY:
            try:
                return common_pb2.ErrorReason.Value(value.decode() if isinstance(value, bytes) else value)
            except ValueError:
                return common_pb2.ERROR_REASON_UNSPECIFIED
    return common_pb2.ERROR_REASON_UNSPECIFIED
