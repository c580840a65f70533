"""Errors the control plane answers with; each maps to one gRPC status code."""

from __future__ import annotations

import grpc

from corral_protocol.v1 import common_pb2


class ApiError(Exception):
    code = grpc.StatusCode.INTERNAL
    # Named in the `corral-error-reason` trailing metadata (corral_protocol.errors) when set.
    reason: common_pb2.ErrorReason.ValueType = common_pb2.ERROR_REASON_UNSPECIFIED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ApiError):
    code = grpc.StatusCode.NOT_FOUND


class ServiceGone(NotFound):
    """The bound service was retired (its app was redeployed or stopped); clients bind again."""

    reason = common_pb2.ERROR_REASON_SERVICE_GONE


class InvalidArgument(ApiError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class PermissionDenied(ApiError):
    code = grpc.StatusCode.PERMISSION_DENIED


class QueueFull(ApiError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
