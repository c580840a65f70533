"""A container's concurrency slots, shared by its two input paths.

Inputs pushed by the control plane wait for a slot in arrival order; direct inputs take a slot only
when one is free and no pushed input is waiting (otherwise the caller is told the container is busy
and goes through the control plane's queue). So the container never runs more than its capacity,
and the direct path cannot starve the queue.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque


class SlotGate:
    def __init__(self, capacity: int, loop: asyncio.AbstractEventLoop) -> None:
        self.capacity = max(1, capacity)
        self._loop = loop
        self._lock = threading.Lock()
        self._used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def used(self) -> int:
        return self._used

    def try_acquire(self) -> bool:
        """Take a free slot at once (any thread); False when full or a pushed input is waiting."""
        with self._lock:
            if self._used >= self.capacity or self._waiters:
                return False
            self._used += 1
            return True

    async def acquire(self) -> None:
        """Wait for a slot (on the event loop), first come first served."""
        with self._lock:
            if self._used < self.capacity and not self._waiters:
                self._used += 1
                return
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
        await waiter  # the releaser hands its slot over; cancellation gives it back (see _grant)

    def release(self) -> None:
        """Give a slot back (any thread); a waiting pushed input gets it first."""
        with self._lock:
            if not self._waiters:
                self._used -= 1
                return
            waiter = self._waiters.popleft()
        self._loop.call_soon_threadsafe(self._grant, waiter)

    def _grant(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done():  # cancelled while waiting: pass the slot on
            self.release()
        else:
            waiter.set_result(None)
