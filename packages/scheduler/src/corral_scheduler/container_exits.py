"""Why containers ended, kept a while after the plane forgets them.

A queued input learns why its container died from the plane itself (`Containers.gone` fails it
with `lost_input_message`). A direct input never passes through the plane: its caller only sees
the connection break. That caller asks `GetContainerExit` and gets the same message, for example
`out of memory (limit 256 MiB): the container running Model.predict was killed (exit code -9)`,
once the node's exit report has arrived (`wait_for_exit`, bounded).

`RecentExits` is part of the pure core (no clock, no I/O); `wait_for_exit` belongs to the driver.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from corral_protocol.v1 import control_pb2
from corral_scheduler.errors import InvalidArgument

MAX_RECENT_EXITS = 4096
"""How many exits are kept (oldest dropped first): a caller asks within seconds of its break."""
MAX_WAIT_S = 10.0
"""The longest a `GetContainerExit` waits for a container that is still known to be alive."""
POLL_S = 0.05


@dataclass(frozen=True)
class ContainerExit:
    service_id: str
    class_name: str
    method_names: frozenset[str]
    why: str
    exit_code: int | None
    stderr_tail: str
    node_lost: bool = False
    app_id: str = ""


def lost_input_message(class_name: str, method: str, why: str, exit_code: int | None, stderr_tail: str, node_lost: bool = False) -> str:
    """What a call of `method` fails with when its container ends this way (`why`); `node_lost`: it
    went with its node, and `why` says what happened to the node."""
    if node_lost:
        return f"the container running {class_name}.{method} was lost with its node: {why}"
    code = f" (exit code {exit_code})" if exit_code is not None else ""
    detail = f"\n\nLast lines of the container's stderr:\n{stderr_tail}" if stderr_tail else ""
    if why.startswith("out of memory"):  # the kernel's verdict first: it is what the caller must fix
        return f"{why}: the container running {class_name}.{method} was killed{code}{detail}"
    return f"the container running {class_name}.{method} exited unexpectedly{code}: {why}{detail}"


class RecentExits:
    """The last `bound` exits, by container id."""

    def __init__(self, bound: int = MAX_RECENT_EXITS) -> None:
        self._bound = bound
        self._exits: OrderedDict[str, ContainerExit] = OrderedDict()

    def add(self, container_id: str, record: ContainerExit) -> None:
        self._exits[container_id] = record
        self._exits.move_to_end(container_id)
        while len(self._exits) > self._bound:
            self._exits.popitem(last=False)

    def get(self, container_id: str) -> ContainerExit | None:
        return self._exits.get(container_id)


def wait_seconds(timeout_s: float) -> float:
    """How long a `GetContainerExit` may wait: its timeout within [0, MAX_WAIT_S]; a timeout that
    is not a finite number (NaN, infinity) waits the longest."""
    if not math.isfinite(timeout_s):
        return MAX_WAIT_S
    return min(max(timeout_s, 0.0), MAX_WAIT_S)


async def wait_for_exit(
    request: control_pb2.GetContainerExitRequest,
    recent: RecentExits,
    alive_in: Callable[[str], str | None],
    reader_app_id: str | None,
) -> control_pb2.GetContainerExitResponse:
    """Answer `GetContainerExit`: the exit's message once it is known; `exited=False` at once for a
    container unknown to this service, or when the (bounded) wait ends with it still alive.
    `alive_in(container_id)` is the service id of a live container, None when there is none.
    `reader_app_id`: the app of the container asking, None for the admin; the message carries the
    stderr tail only for the admin and the containers of the exited container's own app (the
    stderr of another app's code is that app's business: a caller from elsewhere gets the reason)."""
    deadline = time.monotonic() + wait_seconds(request.timeout_s)
    while True:
        record = recent.get(request.container_id)
        if record is not None and record.service_id == request.service_id:
            if request.method not in record.method_names:
                raise InvalidArgument(f"{record.class_name} has no method {request.method[:200]!r}")
            own_app = reader_app_id is None or (bool(record.app_id) and record.app_id == reader_app_id)
            stderr_tail = record.stderr_tail if own_app else ""
            message = lost_input_message(record.class_name, request.method, record.why, record.exit_code, stderr_tail, record.node_lost)
            return control_pb2.GetContainerExitResponse(exited=True, message=message)
        if alive_in(request.container_id) != request.service_id or time.monotonic() >= deadline:
            return control_pb2.GetContainerExitResponse(exited=False)
        await asyncio.sleep(POLL_S)
