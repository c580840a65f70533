"""The client's side of the direct call path.

`.remote()` sends an input straight to a READY container that has a free slot, instead of through
the control plane: one network hop and two processes instead of two hops and three. The control
plane stays in charge: it hands out routes (`GetRoutes`: container address + token), sees each
container's direct load in its reports, and scales on it. Whenever the direct path cannot take an
input (no route yet, every known container busy or stopping, the service has a retry policy), the
call goes through the control plane's queue as before. An input is only ever sent to one place.

Connections carry one input at a time; idle ones are pooled per container (blocking sockets for
sync callers, asyncio transports per event loop for `.aio` callers), and reused only while idle
for less than `CLIENT_REUSE_S` (the container closes them after twice that). A new connection
waits for the container's `DirectAccepted` before it sends an input: a container at its connection
bound closes new connections, and such a caller uses the queue instead of failing.

The exchange of one input over a connection lives in `_direct_exchange`; this module owns the
route tables, picking a container, and what a call's outcome means for its route.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Awaitable, Callable

from corral._direct_exchange import NotSent, exchange, exchange_aio
from corral._direct_routes import Route, RouteTable
from corral.exception import ContainerExitedError, InvalidError
from corral_protocol.framing import FrameError, encode
from corral_protocol.v1 import common_pb2, control_pb2, worker_pb2

W = worker_pb2
# How long a caller whose connection broke mid-call waits for the control plane to learn why the
# container ended (its node reports the exit, an out-of-memory kill for instance, within a second).
EXIT_WAIT_S = 5.0

_input_ids = itertools.count()
_id_prefix = os.urandom(4).hex()


def _new_input_id() -> str:
    return f"di-{_id_prefix}-{next(_input_ids)}"


def _lost(container_id: str, method: str, err: BaseException, why: str) -> ContainerExitedError:
    return ContainerExitedError(why or f"the container running {method} ({container_id}) closed the connection before answering: {err or 'EOF'}")


class DirectPath:
    """Route tables per service and connection pools per container, for one `Client`.

    `get_routes` and `get_routes_aio` ask the control plane for a service's routes (GetRoutes);
    `container_exit` and `container_exit_aio`, why a container ended (GetContainerExit: service id,
    container id, method -> its message, "" when not known)."""

    def __init__(
        self,
        get_routes: Callable[[str], control_pb2.GetRoutesResponse],
        get_routes_aio: Callable[[str], Awaitable[control_pb2.GetRoutesResponse]],
        container_exit: Callable[[str, str, str], str] | None = None,
        container_exit_aio: Callable[[str, str, str], Awaitable[str]] | None = None,
    ) -> None:
        self._get_routes = get_routes
        self._get_routes_aio = get_routes_aio
        self._container_exit = container_exit
        self._container_exit_aio = container_exit_aio
        self._lock = threading.Lock()
        self._tables: dict[str, RouteTable] = {}

    # Routes -----------------------------------------------------------------------------------

    def _table(self, service_id: str) -> RouteTable:
        table = self._tables.get(service_id)
        if table is None:
            table = self._tables.setdefault(service_id, RouteTable())
        return table

    def _claim_refresh(self, table: RouteTable) -> bool:
        with self._lock:
            if table.refreshing or not table.stale(time.monotonic()):
                return False
            table.refreshing = True
            return True

    def _install(self, table: RouteTable, response: control_pb2.GetRoutesResponse | None) -> None:
        with self._lock:
            table.refreshing = False
            table.fetched_at = time.monotonic()
            if response is None:  # the service is gone or the server failed: the control plane path will say why
                fresh: dict[str, Route] = {}
                table.enabled = True
            else:
                table.enabled = response.direct_enabled
                fresh = {}
                for proto in response.routes:
                    existing = table.routes.get(proto.container_id)
                    fresh[proto.container_id] = existing if existing is not None and not existing.dead else Route.from_proto(proto)
            for container_id, route in table.routes.items():
                if container_id not in fresh:
                    route.close()
            table.routes = fresh

    def _refresh(self, service_id: str, table: RouteTable) -> None:
        if not self._claim_refresh(table):
            return
        response = None
        try:
            response = self._get_routes(service_id)
        except Exception:
            pass
        self._install(table, response)

    async def _refresh_aio(self, service_id: str, table: RouteTable) -> None:
        if not self._claim_refresh(table):
            return
        response = None
        try:
            response = await self._get_routes_aio(service_id)
        except Exception:
            pass
        self._install(table, response)

    def _pick(self, table: RouteTable) -> Route | None:
        """The known container with the fewest of this client's inputs in flight and a free slot."""
        with self._lock:
            best: Route | None = None
            routes = list(table.routes.values())
            table.turn += 1
            count = len(routes)
            for i in range(count):
                route = routes[(table.turn + i) % count]
                if route.dead or route.inflight >= route.slots:
                    continue
                if best is None or route.inflight < best.inflight:
                    best = route
            if best is not None:
                best.inflight += 1
            return best

    def _done(self, table: RouteTable, route: Route, response: worker_pb2.DirectResponse | None) -> common_pb2.Result | None:
        with self._lock:
            route.inflight -= 1
        if response is None:
            return None
        if response.WhichOneof("message") == "output":
            if response.output.result.status == common_pb2.RESULT_STATUS_TIMEOUT:
                self._forget(table, route)  # a container that timed out an input exits right after answering
            return response.output.result
        if response.rejected.reason == W.DIRECT_REJECT_REASON_TOO_LARGE:
            raise InvalidError(response.rejected.message)
        if response.rejected.reason != W.DIRECT_REJECT_REASON_BUSY:
            self._forget(table, route)
        return None

    def _failed(self, table: RouteTable, route: Route, err: BaseException) -> bool:
        """Account for an exchange that broke after the input was sent. True for a broken connection:
        the container went away mid-call (raise `lost`); False for anything else (e.g. the caller
        was cancelled: re-raise it as it is)."""
        with self._lock:
            route.inflight -= 1
        if not isinstance(err, (OSError, FrameError)):
            return False
        self._forget(table, route)
        return True

    def lost(self, service_id: str, container_id: str, method: str, err: BaseException) -> ContainerExitedError:
        """The error of a call whose container connection broke: why the container ended, as the
        control plane tells it once its node reported the exit ("out of memory (limit 256 MiB): ...",
        the message a queued call gets), else that the connection closed."""
        why = ""
        if self._container_exit is not None:
            try:
                why = self._container_exit(service_id, container_id, method)
            except Exception:
                pass  # an older control plane, or it is unreachable: the connection's own story
        return _lost(container_id, method, err, why)

    async def lost_aio(self, service_id: str, container_id: str, method: str, err: BaseException) -> ContainerExitedError:
        """As `lost`, for asyncio callers."""
        why = ""
        if self._container_exit_aio is not None:
            try:
                why = await self._container_exit_aio(service_id, container_id, method)
            except Exception:
                pass
        return _lost(container_id, method, err, why)

    def _forget(self, table: RouteTable, route: Route) -> None:
        with self._lock:
            if table.routes.get(route.container_id) is route:
                del table.routes[route.container_id]
            table.fetched_at = float("-inf")  # the next call asks the control plane again
        route.close()

    @staticmethod
    def _request(method: str, args: common_pb2.Payload) -> bytes:
        inp = W.Input(input_id=_new_input_id(), method=method, args=args)
        return encode(W.DirectRequest(input=inp).SerializeToString())

    # Sync callers ------------------------------------------------------------------------------

    def call(self, service_id: str, method: str, args: common_pb2.Payload) -> common_pb2.Result | None:
        """The input's Result, or None when the direct path did not take it (use the control plane)."""
        table = self._table(service_id)
        if table.stale(time.monotonic()):
            self._refresh(service_id, table)
        if not table.enabled or not table.routes:
            return None
        route = self._pick(table)
        if route is None:
            return None
        response = None
        try:
            response = exchange(route, self._request(method, args))
        except NotSent as err:
            if err.forget:
                self._forget(table, route)
            if err.refused and self._container_exit is not None:
                # Its process is gone: let the control plane learn that before it takes the input,
                # or it may push it to that container's ending session (bounded wait; see `lost`).
                with contextlib.suppress(Exception):
                    self._container_exit(service_id, route.container_id, method)
        except BaseException as err:
            if not self._failed(table, route, err):
                raise
            raise self.lost(service_id, route.container_id, method, err) from None
        return self._done(table, route, response)

    # Asyncio callers ---------------------------------------------------------------------------

    async def call_aio(self, service_id: str, method: str, args: common_pb2.Payload) -> common_pb2.Result | None:
        table = self._table(service_id)
        if table.stale(time.monotonic()):
            await self._refresh_aio(service_id, table)
        if not table.enabled or not table.routes:
            return None
        route = self._pick(table)
        if route is None:
            return None
        response = None
        try:
            response = await exchange_aio(route, self._request(method, args))
        except NotSent as err:
            if err.forget:
                self._forget(table, route)
            if err.refused and self._container_exit_aio is not None:
                with contextlib.suppress(Exception):  # as in `call`
                    await self._container_exit_aio(service_id, route.container_id, method)
        except BaseException as err:
            if not self._failed(table, route, err):
                raise
            raise await self.lost_aio(service_id, route.container_id, method, err) from None
        return self._done(table, route, response)
