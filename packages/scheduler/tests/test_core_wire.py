"""Stream messages become the core's events; a container's story is shown as text."""

from __future__ import annotations

from corral_protocol.v1 import common_pb2, node_pb2, worker_pb2
from corral_scheduler import events as ev
from corral_scheduler.lifecycle import Step
from corral_scheduler.views import history_lines
from corral_scheduler.wire_events import node_events, worker_events


def test_node_messages_become_events() -> None:
    exited = node_pb2.NodeSessionRequest(container_exited=node_pb2.ContainerExited(container_id="ct-1", exit_code=3, reason="r"))
    assert node_events("nd-1", exited) == [ev.ContainerExited("ct-1", 3, "r", "", "nd-1")]
    started = node_pb2.NodeSessionRequest(container_started=node_pb2.ContainerStarted(container_id="ct-1", pid=9))
    assert node_events("nd-1", started) == [ev.ContainerStarted("nd-1", "ct-1", 9, "")]
    assert node_events("nd-1", node_pb2.NodeSessionRequest(node_id="nd-1")) == [ev.NodeHeartbeat("nd-1", None)]


def test_a_batch_output_is_one_output_event_per_input() -> None:
    ok = common_pb2.Result(status=common_pb2.RESULT_STATUS_SUCCESS)
    batch = worker_pb2.BatchOutput(outputs=[worker_pb2.Output(input_id="a", result=ok), worker_pb2.Output(input_id="b", result=ok)])
    events = worker_events("ct-1", worker_pb2.WorkerSessionRequest(batch_output=batch))
    assert [e.input_id for e in events if isinstance(e, ev.WorkerOutput)] == ["a", "b"]


def test_worker_lifecycle_messages_become_events() -> None:
    ready = worker_pb2.WorkerSessionRequest(ready=worker_pb2.WorkerReady(slots=2, direct_address="h:1"))
    assert worker_events("ct-1", ready) == [ev.WorkerReady("ct-1", 2, "h:1")]
    snap = worker_pb2.WorkerSessionRequest(snapshot_ready=worker_pb2.SnapshotReady())
    assert worker_events("ct-1", snap) == [ev.SnapshotReady("ct-1")]


def test_history_lines_show_age_and_cause() -> None:
    steps = [Step(10.0, "new", "placed", "placed on node a"), Step(12.5, "placed", "starting", "connected")]
    assert history_lines(steps, 15.0) == ["5.0s ago: new -> placed (placed on node a)", "2.5s ago: placed -> starting (connected)"]
