"""Stopping a cancelled sync method: Python cannot cancel a thread, but it can raise an exception
in one. `InputCancelled` is raised in the thread that runs the input (it takes effect at the
thread's next bytecode, so pure-Python code stops at once and code blocked in C when it returns).
A method that has not stopped within `CANCEL_GRACE_S` leaves its container no choice: the worker
tells the control plane it is draining and exits, and the container is replaced (unless other
inputs wait on it: see `worker_inputs.CancelGrace`).
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager


class InputCancelled(BaseException):
    """Raised in a cancelled sync method's thread. A BaseException, so that a user's `except
    Exception` does not swallow it."""


class ThreadRegistry:
    """Which thread runs which sync input, for `interrupt`."""

    def __init__(self) -> None:
        self._threads: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def running(self, input_id: str) -> Iterator[None]:
        with self._lock:
            self._threads[input_id] = threading.get_ident()
        try:
            yield
        finally:
            with self._lock:
                self._threads.pop(input_id, None)

    def is_running(self, input_id: str) -> bool:
        with self._lock:
            return input_id in self._threads

    def interrupt(self, input_id: str) -> bool:
        """Raise InputCancelled in the input's thread; False when no thread runs it."""
        with self._lock:
            ident = self._threads.get(input_id)
            if ident is None:
                return False
            changed = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(InputCancelled))
        return changed == 1


async def outlive_grace(registry: ThreadRegistry, input_id: str, grace_s: float, others_waiting: Callable[[], bool],
                        give_up: Callable[[str], Awaitable[None]]) -> None:
    """After each `grace_s`, give up on the container when the cancelled input's thread still runs
    it, unless other inputs wait on the container: the control plane already pushed them (it
    freed the cancelled input's slot), they would fail with it, and they run once the thread returns."""
    while True:
        await asyncio.sleep(grace_s)
        if not registry.is_running(input_id):
            return
        if not others_waiting():
            await give_up(f"cancelled input {input_id} did not stop within {grace_s:g} s; the container is replaced")
            return
