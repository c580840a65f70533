"""Container output on the terminal: `corral app logs`, `corral container logs`, and the lines
`corral run` streams while its app runs (through the control plane, so it works from any host)."""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Iterator
from typing import TextIO

import grpc

from corral._client import Client, translate_rpc_error
from corral_protocol.v1 import common_pb2, control_pb2

SETTLE_S = 0.3


def format_line(line: common_pb2.LogLine, with_source: bool = True) -> str:
    when = datetime.datetime.fromtimestamp(line.timestamp, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    if not with_source:
        return f"{when} {line.text}"
    source = line.container_id + (f" {line.input_id}" if line.input_id else "")
    return f"{when} {source} {line.stream}: {line.text}"


def lines(client: Client, request: control_pb2.GetLogsRequest) -> Iterator[common_pb2.LogLine]:
    """The stored lines the request selects, then (with `follow`) new ones until interrupted."""
    responses = client.stub.GetLogs(request, metadata=client.metadata)
    try:
        for response in responses:
            yield from response.lines
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.CANCELLED:
            raise translate_rpc_error(err, client.url) from None
    finally:
        responses.cancel()


class Follower:
    """Print an app's new container output on `out` from a background thread (for `corral run`).

    Example:
        follower = Follower(client, app_id, sys.stderr)
        follower.start()
        ...
        follower.stop()
    """

    def __init__(self, client: Client, app_id: str, out: TextIO) -> None:
        self._client = client
        self._out = out
        self._responses = client.stub.GetLogs(control_pb2.GetLogsRequest(app=app_id, follow=True), metadata=client.metadata)
        self._thread = threading.Thread(target=self._run, name="corral-run-logs", daemon=True)

    def _run(self) -> None:
        try:
            for response in self._responses:
                for line in response.lines:
                    print(f"[{line.container_id}] {line.text}", file=self._out, flush=True)
        except grpc.RpcError:
            pass  # cancelled at exit, or the server went away: the run itself reports that

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop following, a moment after the app stopped: lines sent as its containers exited
        are still on their way through the stream."""
        time.sleep(SETTLE_S)
        self._responses.cancel()
        self._thread.join(timeout=5)
