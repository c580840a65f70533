"""Read-only views of the control plane's live state, as the `List*` RPCs and `GetRoutes` answer them.

Functions, not `ControlPlane` methods: they only read its state and never change it, so the core
(`core.py` and its jobs) stays about transitions and the driver about performing effects.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from corral_protocol.v1 import control_pb2
from corral_scheduler.lifecycle import ContainerState, Step
from corral_scheduler.model import Service

if TYPE_CHECKING:
    from corral_scheduler.control_plane import ControlPlane


def app_infos(plane: ControlPlane, include_stopped: bool) -> list[control_pb2.AppInfo]:
    """Every app (stopped ones only with `include_stopped`), with its count of live containers."""
    infos = []
    for record in plane.apps.values():
        if record.stopped and not include_stopped:
            continue
        if record.stopped:
            state = control_pb2.APP_STATE_STOPPED
        elif record.kind == control_pb2.APP_KIND_DEPLOYED:
            state = control_pb2.APP_STATE_DEPLOYED
        else:
            state = control_pb2.APP_STATE_RUNNING
        containers = sum(
            1 for c in plane.containers.values() if plane.services[c.service_id].app_id == record.app_id and c.state.is_live
        )
        infos.append(control_pb2.AppInfo(
            app_id=record.app_id, name=record.name, kind=control_pb2.AppKind.ValueType(record.kind), state=state, version=record.version,
            created_at=record.created_at, containers=containers,
            classes=[name for name, d in record.class_defs.items() if not d.is_function],
            functions=[name for name, d in record.class_defs.items() if d.is_function],
            next_runs=plane.schedules.next_runs(record.app_id),
        ))
    return infos


def container_infos(plane: ControlPlane, app_id: str = "") -> list[control_pb2.ContainerInfo]:
    """Every container the control plane knows, or only those of `app_id`."""
    infos = []
    for container in plane.containers.values():
        service = plane.services[container.service_id]
        if app_id and service.app_id != app_id:
            continue
        app = plane.apps[service.app_id]
        node = plane.nodes.get(container.node_id)
        usage = node.usage.get(container.container_id) if node is not None else None
        infos.append(control_pb2.ContainerInfo(
            container_id=container.container_id, app_id=app.app_id, app_name=app.name,
            class_name=service.class_def.name, service_id=service.service_id, node_id=container.node_id,
            state=container.state.wire, running_inputs=container.load, max_inputs=container.slots,
            started_at=container.started_at, inputs_served=container.inputs_served, parameters=service.parameters,
            restored_from_snapshot=container.restored, usage=usage, history=history_lines(container.history.steps, time.monotonic()),
        ))
    return infos


def history_lines(steps: Iterable[Step], now: float) -> list[str]:
    """A container's story for `corral container list --verbose`, ages relative to `now` (monotonic)."""
    return [f"{max(0.0, now - s.at):.1f}s ago: {s.start} -> {s.finish} ({s.cause})" for s in steps]


def routes(service: Service) -> control_pb2.GetRoutesResponse:
    """Where clients may send the service's inputs directly: its READY containers' addresses."""
    if not service.direct_enabled:
        return control_pb2.GetRoutesResponse(direct_enabled=False)
    return control_pb2.GetRoutesResponse(direct_enabled=True, routes=[
        control_pb2.ContainerRoute(container_id=c.container_id, address=c.direct_address, token=c.direct_token, slots=c.slots)
        for c in service.containers.values()
        if c.state == ContainerState.READY and c.direct_address
    ])


def node_infos(plane: ControlPlane) -> list[control_pb2.NodeInfo]:
    """Every node: connected ones, and lost ones until they register again (or an hour passed)."""
    return [node.info() for node in plane.nodes.values()]


def snapshot_infos(plane: ControlPlane) -> list[control_pb2.SnapshotInfo]:
    """Every snapshot image the nodes reported, with its node's and app's names."""
    infos = []
    for node_id, images in plane.snapshots.images.items():
        node = plane.nodes.get(node_id)
        for image in images:
            app = plane.apps.get(image.app_id)
            infos.append(control_pb2.SnapshotInfo(
                image=image, node_id=node_id, node_name=node.name if node else "",
                app_name=app.name if app else "", broken=image.snapshot_key in plane.snapshots.broken,
            ))
    return infos
