"""What user code can ask about the call it runs in: `corral.current_input_id()`."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_CURRENT_INPUT: contextvars.ContextVar[str | None] = contextvars.ContextVar("corral_current_input", default=None)


_serving = False


def serving() -> bool:
    """True in a container once its code has been imported (calls from it are then allowed)."""
    return _serving


def mark_serving() -> None:
    """The worker imported the user's module: from now on, its code may call other functions."""
    global _serving
    _serving = True


def current_input_id() -> str | None:
    """The id of the input (the call id, `fc-...`) this code runs for inside a container; None
    outside one, in `@enter`/`@exit` hooks, and in batched methods (a batch holds many inputs).

    Example:
        @app.function()
        def work():
            print("working on", corral.current_input_id())
    """
    return _CURRENT_INPUT.get()


@contextlib.contextmanager
def input_scope(input_id: str) -> Iterator[None]:
    """Make `current_input_id()` answer `input_id` in this context (the worker's, around a call)."""
    token = _CURRENT_INPUT.set(input_id)
    try:
        yield
    finally:
        _CURRENT_INPUT.reset(token)
