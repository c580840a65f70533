"""The ControlService RPCs of blobs (`corral_scheduler.blobs`): PutBlob and GetBlob."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from corral_protocol.errors import reason_metadata
from corral_protocol.v1 import control_pb2
from corral_scheduler.auth import bearer_token
from corral_scheduler.durable import token_digest
from corral_scheduler.errors import ApiError

if TYPE_CHECKING:
    from corral_scheduler.control_plane import ControlPlane


class BlobRpcs:
    """Mixed into the ControlService servicer."""

    plane: ControlPlane

    def _caller_container(self, context: Any) -> str | None:
        """The container whose token made this call, or None for the admin token. A container
        token the plane knows only as an awaited runner (after a restart) gets a name that is
        granted nothing."""
        token = bearer_token(context.invocation_metadata())
        if hmac.compare_digest(token.encode(), self.plane.admin_token.encode()):
            return None
        return self.plane.core.containers.owner_of(token) or f"unknown container ({token_digest(token)[:12]})"

    async def PutBlob(self, request_iterator: AsyncIterator[control_pb2.PutBlobRequest], context: Any) -> control_pb2.PutBlobResponse:
        """A payload above the inline threshold, streamed to a file (see corral_scheduler.blobs)."""
        try:
            blob_id = await self.plane.blobs.put(request_iterator, uploader=self._caller_container(context) or "")
        except ApiError as err:
            await context.abort(err.code, err.message, reason_metadata(err.reason))
            raise
        return control_pb2.PutBlobResponse(blob_id=blob_id)

    async def GetBlob(self, request: control_pb2.GetBlobRequest, context: Any) -> AsyncIterator[control_pb2.GetBlobResponse]:
        try:
            self.plane.blobs.check_reader(request.blob_id, self._caller_container(context))
            chunks = self.plane.blobs.chunks(request.blob_id)
            first = next(chunks)
        except ApiError as err:
            await context.abort(err.code, err.message, reason_metadata(err.reason))
            return
        yield first
        for chunk in chunks:
            yield chunk

