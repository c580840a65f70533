"""Messages of the node and worker streams, as the core's events."""

from __future__ import annotations

from corral_protocol.v1 import node_pb2, worker_pb2
from corral_scheduler import events as ev


def node_events(node_id: str, message: node_pb2.NodeSessionRequest) -> list[ev.Event]:
    kind = message.WhichOneof("event")
    if kind == "container_started":
        started = message.container_started
        return [ev.ContainerStarted(node_id, started.container_id, started.pid, started.snapshot_error)]
    if kind == "snapshot_result":
        return [ev.SnapshotTaken(node_id, message.snapshot_result)]
    if kind == "heartbeat":
        heartbeat = message.heartbeat
        inventory = heartbeat.inventory if heartbeat.HasField("inventory") else None
        return [ev.NodeHeartbeat(node_id, tuple(heartbeat.snapshots), tuple(heartbeat.running_containers), inventory, tuple(heartbeat.usage))]
    if kind == "container_exited":
        exited = message.container_exited
        return [ev.ContainerExited(exited.container_id, exited.exit_code, exited.reason, exited.stderr_tail, node_id)]
    return [ev.NodeHeartbeat(node_id, None)]  # no news but that it is alive


def worker_events(container_id: str, message: worker_pb2.WorkerSessionRequest) -> list[ev.Event]:
    kind = message.WhichOneof("message")
    if kind == "output":
        return [ev.WorkerOutput(container_id, message.output.input_id, message.output.result)]
    if kind == "batch_output":
        return [ev.WorkerOutput(container_id, output.input_id, output.result) for output in message.batch_output.outputs]
    if kind == "ready":
        return [ev.WorkerReady(container_id, message.ready.slots, message.ready.direct_address)]
    if kind == "http_response_start":
        return [ev.WorkerHttp(container_id, message.http_response_start)]
    if kind == "http_body":
        return [ev.WorkerHttp(container_id, message.http_body)]
    if kind == "generator_item":
        return [ev.WorkerItem(container_id, message.generator_item)]
    if kind == "load":
        return [ev.WorkerLoad(container_id, message.load.direct_running, message.load.direct_served)]
    if kind == "draining":
        return [ev.WorkerDraining(container_id, message.draining.reason)]
    if kind == "init_failed":
        failed = message.init_failed
        return [ev.InitFailed(container_id, failed.exception_type, failed.message, failed.traceback)]
    if kind == "snapshot_ready":
        return [ev.SnapshotReady(container_id)]
    return []
