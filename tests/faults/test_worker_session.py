"""A worker whose session with the control plane ends without a Shutdown says why and exits
non-zero; after a Shutdown it exits 0. The worker is the real `python -m corral_runtime.worker`;
the control plane is a stand-in WorkerService that ends the session on cue (killing the real one
belongs to the durable-calls work of issue 15)."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

import faults_app
from conftest import APPS
from corral_protocol import env
from corral_protocol.v1 import worker_pb2, worker_pb2_grpc
from corral_runtime.worker import SESSION_LOST

W = worker_pb2


class StandInPlane(worker_pb2_grpc.WorkerServiceServicer):
    """Sends ContainerInit, waits for WorkerReady, then ends the session as `how` says."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.ready: queue.Queue[W.WorkerReady] = queue.Queue()

    def WorkerSession(self, request_iterator: Iterator[W.WorkerSessionRequest], context: Any) -> Iterator[W.WorkerSessionResponse]:
        definition = faults_app.Payloads.definition
        assert definition is not None
        next(request_iterator)  # hello
        yield W.WorkerSessionResponse(init=W.ContainerInit(app_id="ap-test", class_def=definition.to_proto("faults_app")))
        for message in request_iterator:
            if message.WhichOneof("message") == "ready":
                self.ready.put(message.ready)
                break
        if self.how == "shutdown":
            yield W.WorkerSessionResponse(shutdown=W.Shutdown())
            for _ in request_iterator:  # until the worker finishes writing
                pass
        elif self.how == "abort":
            context.abort(grpc.StatusCode.INTERNAL, "the stand-in plane failed")
        # "end": return, closing the stream with OK and no Shutdown


@pytest.mark.parametrize(("how", "code", "why"), [
    ("shutdown", 0, ""),
    ("end", SESSION_LOST, "ended the session without a Shutdown"),
    ("abort", SESSION_LOST, "lost the control plane (INTERNAL"),
])
def test_a_worker_exits_non_zero_and_says_why_when_its_session_ends_without_a_shutdown(how: str, code: int, why: str) -> None:
    plane = StandInPlane(how)
    server = grpc.server(futures.ThreadPoolExecutor(4))
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(plane, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        environ.update({
            env.CORRAL_CONTROL_URL: f"grpc://127.0.0.1:{port}", env.CORRAL_CONTAINER_ID: "ct-test",
            env.CORRAL_CONTAINER_TOKEN: "token", env.CORRAL_BUNDLE_DIR: str(APPS),
        })
        worker = subprocess.run([sys.executable, "-m", "corral_runtime.worker"], env=environ, capture_output=True, text=True, timeout=60)
        assert plane.ready.get(timeout=1).slots >= 1
    finally:
        server.stop(0)
    assert worker.returncode == code, worker.stderr
    if why:
        assert why in worker.stderr
        assert f"exiting with code {SESSION_LOST}" in worker.stderr
