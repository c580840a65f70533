"""What the worker watches while its direct server serves: load reports for the control plane's
autoscaler (`WorkerLoad`, every LOAD_REPORT_S when it changed) and the class's timeout for direct
inputs (an expired one fails with a timeout, and the container exits)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

from corral_protocol.v1 import common_pb2, worker_pb2
from corral_runtime.direct import DirectServer
from corral_runtime.worker_inputs import Send, exit_draining


class DirectWatch:
    LOAD_REPORT_S = 0.05
    WATCHDOG_S = 0.2

    def __init__(self, direct: DirectServer, class_name: str, send: Send) -> None:
        self.direct = direct
        self.class_name = class_name
        self._send = send
        self._last_load: tuple[int, int] = (0, 0)

    async def report_load(self) -> None:
        while True:
            await asyncio.sleep(self.LOAD_REPORT_S)
            await self.report_load_once()

    async def report_load_once(self, force: bool = False) -> None:
        load = (len(self.direct.running), self.direct.served)
        if load == self._last_load and not force:
            return
        self._last_load = load
        with contextlib.suppress(Exception):
            await self._send(worker_pb2.WorkerSessionRequest(load=worker_pb2.WorkerLoad(direct_running=load[0], direct_served=load[1])))

    async def watch_timeouts(self) -> None:
        """A direct input past the class's timeout fails with a timeout, and the container exits:
        a Python thread cannot be interrupted safely (the control plane does the same for pushed inputs)."""
        while True:
            await asyncio.sleep(self.WATCHDOG_S)
            expired = self.direct.expired(time.monotonic())
            if not expired:
                continue
            self.direct.drain()  # no new connections or inputs while the container goes away
            for running in expired:
                message = f"{self.class_name}.{running.method} timed out after {self.direct.timeout_s:g} s"
                self.direct.answer(running, common_pb2.Result(status=common_pb2.RESULT_STATUS_TIMEOUT, message=message))
                print(f"corral worker: input {running.input_id}: {message}; the container exits", file=sys.stderr)
            # The control plane stops pushing inputs here and has the node kill this process, as for a
            # pushed input's timeout; exit anyway if it cannot be told or does not act.
            reason = f"input {expired[0].input_id} ran past the class's timeout ({self.direct.timeout_s:g} s)"
            await exit_draining(self._send, reason)
