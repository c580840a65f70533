"""gRPC adapters: ControlService, NodeService and WorkerService over the `ControlPlane`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from corral_protocol import CALL_ID_METADATA_KEY, payloads
from corral_protocol.arguments import format_problem
from corral_protocol.errors import reason_metadata
from corral_protocol.names import name_problem
from corral_protocol.v1 import (
    control_pb2,
    control_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)
from corral_scheduler import events as ev
from corral_scheduler import views
from corral_scheduler.auth import bearer_token
from corral_scheduler.blob_rpcs import BlobRpcs
from corral_scheduler.control_plane import ControlPlane
from corral_scheduler.errors import ApiError, InvalidArgument

log = logging.getLogger("corral.scheduler")

T = TypeVar("T")
_BUNDLE_CHUNK = 1024 * 1024
MAX_BUNDLE_BYTES = 256 * 1024 * 1024


def api(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Turn `ApiError`s into gRPC statuses."""

    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await method(self, request, context)
        except ApiError as err:
            await context.abort(err.code, err.message, reason_metadata(err.reason))
            raise  # unreachable: abort raises

    wrapper.__name__ = method.__name__
    return wrapper


def _has_deadline(context: Any) -> bool:
    """True when the client set a deadline on this RPC.

    gRPC cannot tell a server whether a client's deadline fired or the client cancelled (both
    arrive as a cancellation, and the client's clock runs ahead of the server's), so the rule
    is the deadline's presence: a deterministic one that clients can rely on."""
    return context.time_remaining() is not None


class ControlServicer(BlobRpcs, control_pb2_grpc.ControlServiceServicer):
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.max_payload_bytes = payloads.max_payload_bytes()

    @api
    async def HasBundle(self, request: control_pb2.HasBundleRequest, context: Any) -> control_pb2.HasBundleResponse:
        try:
            return control_pb2.HasBundleResponse(present=self.plane.has_bundle(request.hash))
        except ValueError as err:
            raise InvalidArgument(str(err)) from None

    @api
    async def UploadBundle(self, request_iterator: AsyncIterator[control_pb2.UploadBundleRequest], context: Any) -> control_pb2.UploadBundleResponse:
        bundle_hash = ""
        parts: list[bytes] = []
        size = 0
        async for chunk in request_iterator:
            bundle_hash = bundle_hash or chunk.hash
            size += len(chunk.data)
            if size > MAX_BUNDLE_BYTES:
                raise InvalidArgument(f"code bundle is larger than {MAX_BUNDLE_BYTES // 2**20} MiB")
            parts.append(chunk.data)
        try:
            self.plane.put_bundle(bundle_hash, b"".join(parts))
        except ValueError as err:
            raise InvalidArgument(str(err)) from None
        return control_pb2.UploadBundleResponse(hash=bundle_hash)

    @api
    async def CreateApp(self, request: control_pb2.CreateAppRequest, context: Any) -> control_pb2.CreateAppResponse:
        # Deployed and ephemeral apps alike (an ephemeral app is served under /<name>-dev/).
        problems = [name_problem("app", request.name)] if request.name else []
        problems += [name_problem("class", class_def.name) for class_def in request.classes]
        for problem in problems:
            if problem:
                raise InvalidArgument(problem)
        return self.plane.create_app(request)

    @api
    async def AppHeartbeat(self, request: control_pb2.AppHeartbeatRequest, context: Any) -> control_pb2.AppHeartbeatResponse:
        self.plane.app_heartbeat(request.app_id)
        return control_pb2.AppHeartbeatResponse()

    @api
    async def StopApp(self, request: control_pb2.StopAppRequest, context: Any) -> control_pb2.StopAppResponse:
        return control_pb2.StopAppResponse(app_id=self.plane.stop_app(request.app))

    @api
    async def ListApps(self, request: control_pb2.ListAppsRequest, context: Any) -> control_pb2.ListAppsResponse:
        return control_pb2.ListAppsResponse(apps=views.app_infos(self.plane, request.include_stopped))

    @api
    async def LookupClass(self, request: control_pb2.LookupClassRequest, context: Any) -> control_pb2.LookupClassResponse:
        app_id, class_def = self.plane.lookup_class(request.app_name, request.class_name, request.app_id)
        return control_pb2.LookupClassResponse(app_id=app_id, class_def=class_def)

    @api
    async def BindService(self, request: control_pb2.BindServiceRequest, context: Any) -> control_pb2.BindServiceResponse:
        service_id = self.plane.bind_service(request.app_id, request.class_name, request.parameters, request.options)
        return control_pb2.BindServiceResponse(service_id=service_id)

    def _check_args(self, method: str, args: Any, context: Any) -> None:
        """The payload limit (the SDK checks first; this is the authority for every client), and a
        blob that is stored and that the caller may use (a container: one it uploaded or was granted)."""
        what = f"the arguments of {method or 'the call'}"
        size = payloads.size_of(args)
        if size > self.max_payload_bytes:
            raise InvalidArgument(payloads.too_large(what, size, self.max_payload_bytes))
        self.plane.blobs.check_payload(args, what, sender=self._caller_container(context))

    @api
    async def Invoke(self, request: control_pb2.InvokeRequest, context: Any) -> control_pb2.InvokeResponse:
        problem = format_problem(request.args)
        if problem is not None:
            raise InvalidArgument(problem)
        self._check_args(request.method, request.args, context)
        inp = self.plane.invoke(request.service_id, request.method, request.args, durable=not request.wait)
        if not request.wait:
            return control_pb2.InvokeResponse(call_id=inp.call_id)
        try:
            await context.send_initial_metadata(((CALL_ID_METADATA_KEY, inp.call_id),))
            result = await asyncio.shield(inp.future)
        except asyncio.CancelledError:
            # A caller that set a deadline has the call id and may collect the result with
            # GetResult (or cancel it with CancelCall); without one (the Python SDK), a cancelled
            # or disconnected caller wants the call cancelled.
            if not _has_deadline(context):
                self.plane.cancel(inp.call_id, "the caller went away")
                self.plane.forget(inp.call_id)
            raise
        self.plane.forget(inp.call_id)
        caller = self._caller_container(context)
        if caller is not None:
            self.plane.blobs.grant(caller, [result.value])
        return control_pb2.InvokeResponse(call_id=inp.call_id, result=result)

    async def InvokeStream(self, request: control_pb2.InvokeStreamRequest, context: Any) -> AsyncIterator[control_pb2.InvokeStreamResponse]:
        """A generator call: its id, its items as they arrive, its Result. A caller that goes away
        cancels the call, which stops the generator in the container."""
        try:
            problem = format_problem(request.args)
            if problem is not None:
                raise InvalidArgument(problem)
            self._check_args(request.method, request.args, context)
            call = self.plane.invoke(request.service_id, request.method, request.args, stream=True)
        except ApiError as err:
            await context.abort(err.code, err.message, reason_metadata(err.reason))
            return
        assert call.items is not None
        finished = False
        item_task: asyncio.Future[Any] | None = None
        try:
            yield control_pb2.InvokeStreamResponse(call_id=call.call_id)
            while True:
                item_task = asyncio.ensure_future(call.items.get())
                done, _ = await asyncio.wait({item_task, call.future}, return_when=asyncio.FIRST_COMPLETED)
                if item_task in done:
                    yield control_pb2.InvokeStreamResponse(item=item_task.result())
                    continue
                item_task.cancel()
                while not call.items.empty():  # items the worker sent before its Output
                    yield control_pb2.InvokeStreamResponse(item=call.items.get_nowait())
                finished = True
                yield control_pb2.InvokeStreamResponse(result=call.future.result())
                return
        finally:
            if item_task is not None:
                item_task.cancel()
            if not finished:
                self.plane.cancel(call.call_id, "the caller stopped consuming the generator")
            self.plane.forget(call.call_id)

    async def GetLogs(self, request: control_pb2.GetLogsRequest, context: Any) -> AsyncIterator[control_pb2.GetLogsResponse]:
        """An app's or a container's stored output, then (with `follow`) new lines until cancelled."""
        try:
            if not request.app and not request.container_id:
                raise InvalidArgument("GetLogs needs an app or a container id")
            app_id = self.plane.log_app_id(request.app) if request.app else ""
        except ApiError as err:
            await context.abort(err.code, err.message, reason_metadata(err.reason))
            return
        async for page in self.plane.logs.follow(app_id=app_id, container_id=request.container_id, input_id=request.input_id,
                                                 tail=request.tail, follow=request.follow):
            yield control_pb2.GetLogsResponse(lines=page)

    @api
    async def GetRoutes(self, request: control_pb2.GetRoutesRequest, context: Any) -> control_pb2.GetRoutesResponse:
        return self.plane.get_routes(request.service_id)

    @api
    async def GetContainerExit(self, request: control_pb2.GetContainerExitRequest, context: Any) -> control_pb2.GetContainerExitResponse:
        return await self.plane.container_exit(request, self._caller_container(context))

    @api
    async def GetResult(self, request: control_pb2.GetResultRequest, context: Any) -> control_pb2.GetResultResponse:
        inp = self.plane.get_input(request.call_id)
        if not inp.future.done() and request.timeout_s > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(inp.future), timeout=request.timeout_s)
        if not inp.future.done():
            return control_pb2.GetResultResponse(done=False)
        result = inp.future.result()
        caller = self._caller_container(context)
        if caller is not None:
            self.plane.blobs.grant(caller, [result.value])
        return control_pb2.GetResultResponse(done=True, result=result)

    @api
    async def CancelCall(self, request: control_pb2.CancelCallRequest, context: Any) -> control_pb2.CancelCallResponse:
        self.plane.get_input(request.call_id)
        return control_pb2.CancelCallResponse(outcome=self.plane.cancel(request.call_id))

    @api
    async def UpdateAutoscaler(self, request: control_pb2.UpdateAutoscalerRequest, context: Any) -> control_pb2.UpdateAutoscalerResponse:
        self.plane.update_autoscaler(request.service_id, request.settings)
        return control_pb2.UpdateAutoscalerResponse()

    @api
    async def ListContainers(self, request: control_pb2.ListContainersRequest, context: Any) -> control_pb2.ListContainersResponse:
        return control_pb2.ListContainersResponse(containers=views.container_infos(self.plane, request.app_id))

    @api
    async def ListNodes(self, request: control_pb2.ListNodesRequest, context: Any) -> control_pb2.ListNodesResponse:
        return control_pb2.ListNodesResponse(nodes=views.node_infos(self.plane))

    @api
    async def CordonNode(self, request: control_pb2.CordonNodeRequest, context: Any) -> control_pb2.CordonNodeResponse:
        return control_pb2.CordonNodeResponse(node=self.plane.operate_node(ev.NodeCordonRequested(request.node, cordon=True)))

    @api
    async def UncordonNode(self, request: control_pb2.UncordonNodeRequest, context: Any) -> control_pb2.UncordonNodeResponse:
        return control_pb2.UncordonNodeResponse(node=self.plane.operate_node(ev.NodeCordonRequested(request.node, cordon=False)))

    @api
    async def DrainNode(self, request: control_pb2.DrainNodeRequest, context: Any) -> control_pb2.DrainNodeResponse:
        return control_pb2.DrainNodeResponse(node=self.plane.operate_node(ev.NodeDrainRequested(request.node, request.timeout_s)))

    @api
    async def SetSecret(self, request: control_pb2.SetSecretRequest, context: Any) -> control_pb2.SetSecretResponse:
        self.plane.set_secret(request.name, dict(request.values))
        return control_pb2.SetSecretResponse()

    @api
    async def ListSecrets(self, request: control_pb2.ListSecretsRequest, context: Any) -> control_pb2.ListSecretsResponse:
        return control_pb2.ListSecretsResponse(names=self.plane.secret_names())

    @api
    async def DeleteSecret(self, request: control_pb2.DeleteSecretRequest, context: Any) -> control_pb2.DeleteSecretResponse:
        self.plane.delete_secret(request.name)
        return control_pb2.DeleteSecretResponse()

    @api
    async def CreateProxyToken(self, request: control_pb2.CreateProxyTokenRequest, context: Any) -> control_pb2.CreateProxyTokenResponse:
        token_id, secret = self.plane.create_proxy_token(request.name)
        return control_pb2.CreateProxyTokenResponse(token_id=token_id, token_secret=secret)

    @api
    async def ListSnapshots(self, request: control_pb2.ListSnapshotsRequest, context: Any) -> control_pb2.ListSnapshotsResponse:
        return control_pb2.ListSnapshotsResponse(snapshots=views.snapshot_infos(self.plane))

    @api
    async def DeleteSnapshots(self, request: control_pb2.DeleteSnapshotsRequest, context: Any) -> control_pb2.DeleteSnapshotsResponse:
        return control_pb2.DeleteSnapshotsResponse(deleted=self.plane.delete_snapshots(request))

    async def BuildImages(self, request: control_pb2.BuildImagesRequest, context: Any) -> AsyncIterator[control_pb2.BuildImagesResponse]:
        async for report in self.plane.image_builds.build(list(request.images)):
            yield control_pb2.BuildImagesResponse(progress=report)

    @api
    async def ManageImages(self, request: control_pb2.ManageImagesRequest, context: Any) -> control_pb2.ManageImagesResponse:
        return await self.plane.image_builds.manage(request)


class NodeServicer(node_pb2_grpc.NodeServiceServicer):
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    @api
    async def RegisterNode(self, request: node_pb2.RegisterNodeRequest, context: Any) -> node_pb2.RegisterNodeResponse:
        node_id = self.plane.register_node(request)
        return node_pb2.RegisterNodeResponse(node_id=node_id, heartbeat_interval_s=self.plane.node_heartbeat_interval_s)

    async def NodeSession(self, request_iterator: AsyncIterator[node_pb2.NodeSessionRequest], context: Any) -> AsyncIterator[node_pb2.NodeSessionResponse]:
        try:
            first = await request_iterator.__anext__()
        except StopAsyncIteration:
            return
        node_id = first.node_id
        try:
            outbox = self.plane.open_node_session(node_id)
        except ApiError as err:
            await context.abort(err.code, err.message)
            return
        self.plane.node_event(node_id, first)

        async def read() -> None:
            try:
                async for event in request_iterator:
                    kind = event.WhichOneof("event")
                    if kind == "build_progress":  # relayed to the client, not a core event
                        self.plane.image_builds.progress(event.build_progress)
                        continue
                    if kind == "image_cache":
                        self.plane.image_builds.cache_report(event.image_cache)
                        continue
                    self.plane.node_event(node_id, event)
            finally:
                outbox.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                command = await outbox.get()
                if command is None:
                    break
                yield command
        finally:
            reader.cancel()
            self.plane.close_node_session(node_id, outbox)

    async def GetBundle(self, request: node_pb2.GetBundleRequest, context: Any) -> AsyncIterator[node_pb2.GetBundleResponse]:
        try:
            path = self.plane.bundle_path(request.hash)
            data = path.read_bytes()
        except (ValueError, OSError):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"bundle {request.hash!r} not found")
            return
        for offset in range(0, max(1, len(data)), _BUNDLE_CHUNK):
            yield node_pb2.GetBundleResponse(data=data[offset:offset + _BUNDLE_CHUNK])


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    async def WorkerSession(self, request_iterator: AsyncIterator[worker_pb2.WorkerSessionRequest], context: Any) -> AsyncIterator[worker_pb2.WorkerSessionResponse]:
        try:
            hello = await request_iterator.__anext__()
        except StopAsyncIteration:
            return
        if hello.WhichOneof("message") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a worker session starts with hello")
            return
        container_id = hello.hello.container_id
        try:
            outbox = self.plane.open_worker_session(container_id, bearer_token(context.invocation_metadata()))
        except ApiError as err:
            await context.abort(err.code, err.message)
            return
        plane = self.plane

        async def read() -> None:
            try:
                async for message in request_iterator:
                    plane.worker_message(container_id, message)
            except Exception:
                log.debug("worker stream of %s ended with an error", container_id, exc_info=True)
            finally:
                plane.close_worker_session(container_id, outbox)  # nothing more is sent there

        reader = asyncio.create_task(read())
        try:
            while True:  # ContainerInit comes first
                message = await outbox.get()
                if message is None:
                    break
                yield message
        finally:
            reader.cancel()
            self.plane.close_worker_session(container_id, outbox)

    async def DeliverOutputs(self, request: worker_pb2.DeliverOutputsRequest, context: Any) -> worker_pb2.DeliverOutputsResponse:
        """Outputs of spawned inputs that a container finished after the plane restarted."""
        self.plane.handle(ev.OutputsDelivered(request.container_id, bearer_token(context.invocation_metadata()), tuple(request.outputs)))
        return worker_pb2.DeliverOutputsResponse()
