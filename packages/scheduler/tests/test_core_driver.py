"""The asyncio driver in-process: effects become stream messages, resolved futures and timers."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from corral_protocol.v1 import common_pb2, control_pb2, node_pb2, worker_pb2
from corral_scheduler.control_plane import ControlPlane
from corral_scheduler.errors import NotFound, PermissionDenied
from corral_scheduler.store import Store
from corral_scheduler.testing import class_def

S = common_pb2


async def plane_with_node(tmp_path: Path, **options: object) -> tuple[ControlPlane, asyncio.Queue, str]:
    store = Store(tmp_path)
    data = b"bundle"
    bundle = hashlib.sha256(data).hexdigest()
    store.put_bundle(bundle, data)
    plane = ControlPlane(store, "admin")
    node_id = plane.register_node(node_pb2.RegisterNodeRequest(name="n1", inventory=common_pb2.NodeInventory(cpu=4, memory_mib=4096)))
    outbox = plane.open_node_session(node_id)
    request = control_pb2.CreateAppRequest(name="app", kind=control_pb2.APP_KIND_EPHEMERAL, bundle_hash=bundle,
                                           classes=[class_def("Model", **options)])  # type: ignore[arg-type]
    app_id = plane.create_app(request).app_id
    return plane, outbox, plane.bind_service(app_id, "Model", [], common_pb2.ServiceOptions())


def test_a_call_goes_through_the_driver_from_invoke_to_its_future(tmp_path: Path) -> None:
    async def scenario() -> None:
        plane, node_outbox, service = await plane_with_node(tmp_path)
        call = plane.invoke(service, "run", common_pb2.Payload(data=b"x"))
        start = (await node_outbox.get()).start_container
        assert start.env["CORRAL_APP_KIND"] == "ephemeral"
        with pytest.raises(PermissionDenied):
            plane.open_worker_session(start.container_id, "not-its-token")
        worker = plane.open_worker_session(start.container_id, start.container_token)
        first = await worker.get()
        assert first is not None and first.WhichOneof("message") == "init"
        plane.worker_message(start.container_id, worker_pb2.WorkerSessionRequest(ready=worker_pb2.WorkerReady(slots=1)))
        pushed = await worker.get()
        assert pushed is not None and pushed.input.input_id == call.call_id
        ok = common_pb2.Result(status=S.RESULT_STATUS_SUCCESS)
        plane.worker_message(start.container_id, worker_pb2.WorkerSessionRequest(output=worker_pb2.Output(input_id=call.call_id, result=ok)))
        assert (await asyncio.wait_for(call.future, 1)).status == S.RESULT_STATUS_SUCCESS
        plane.forget(call.call_id)
        with pytest.raises(NotFound):
            plane.get_input(call.call_id)
        await plane.close()

    asyncio.run(scenario())


def test_the_driver_arms_real_timers_for_the_core(tmp_path: Path) -> None:
    async def scenario() -> None:
        plane, node_outbox, service = await plane_with_node(tmp_path, timeout_s=0.05)
        call = plane.invoke(service, "run", common_pb2.Payload(data=b"x"))
        start = (await node_outbox.get()).start_container
        plane.open_worker_session(start.container_id, start.container_token)
        plane.worker_message(start.container_id, worker_pb2.WorkerSessionRequest(ready=worker_pb2.WorkerReady(slots=1)))
        result = await asyncio.wait_for(call.future, 5)
        assert result.status == S.RESULT_STATUS_TIMEOUT
        stop = await asyncio.wait_for(node_outbox.get(), 1)
        assert stop is not None and stop.stop_container.container_id == start.container_id
        await plane.close()

    asyncio.run(scenario())


def test_a_broken_worker_session_makes_the_container_lost(tmp_path: Path) -> None:
    async def scenario() -> None:
        plane, node_outbox, service = await plane_with_node(tmp_path)
        plane.invoke(service, "run", common_pb2.Payload(data=b"x"))
        start = (await node_outbox.get()).start_container
        worker = plane.open_worker_session(start.container_id, start.container_token)
        with pytest.raises(PermissionDenied, match="already connected"):
            plane.open_worker_session(start.container_id, start.container_token)
        plane.close_worker_session(start.container_id, worker)
        assert plane.containers[start.container_id].state.value == "lost"
        history = plane.container_history(start.container_id)
        assert [s.finish for s in history] == ["placed", "starting", "lost"]
        await plane.close()

    asyncio.run(scenario())
