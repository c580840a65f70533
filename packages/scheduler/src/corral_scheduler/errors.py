"""Errors the control plane answers with; each maps to one gRPC status code."""

from __future__ import annotations

import grpc


class ApiError(Exception):
    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ApiError):
    code = grpc.StatusCode.NOT_FOUND


class InvalidArgument(ApiError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class PermissionDenied(ApiError):
    code = grpc.StatusCode.PERMISSION_DENIED


class QueueFull(ApiError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
