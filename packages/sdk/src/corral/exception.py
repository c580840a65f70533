"""Errors that Corral raises in the caller.

A user exception raised inside a container is re-raised as itself (its own type), with the remote
traceback attached as `__cause__` (a `RemoteTraceback`). Everything else is one of the types below.
"""

from __future__ import annotations

import builtins


class Error(Exception):
    """Base class of every Corral error."""


class InvalidError(Error):
    """Something was used the wrong way: a bad decorator argument, a bad parameter, a bad option."""


class InvalidArgumentError(InvalidError, builtins.TypeError):
    """A call's arguments do not fit the method's signature (missing, unknown or extra arguments, a
    value of the wrong type); the method never ran. A TypeError, as calling the method locally with
    the same arguments would raise."""


class NotFoundError(Error):
    """An app, class, method, call or secret that was looked up does not exist."""


class ServiceGoneError(NotFoundError):
    """The service a handle was bound to was retired (its app was redeployed or stopped).

    Handles rebind once by themselves, so this reaches user code only when the app is gone for good."""


class AuthError(Error):
    """The server refused the token (wrong token, or a token of the wrong kind)."""


class VersionMismatchError(Error):
    """The client and server speak incompatible protocol versions."""


class ConnectionError(Error):
    """The Corral server could not be reached."""


class ExecutionError(Error):
    """The platform could not run the input to completion."""


class InitError(ExecutionError):
    """An `@enter` hook raised, so the container never served; the message carries its traceback."""


class ContainerExitedError(ExecutionError):
    """The container died while it ran the input (a crash, `os._exit`, out of memory)."""


class TimeoutError(Error, builtins.TimeoutError):  # noqa: A001
    """A wait ran out of time (for example `FunctionCall.get(timeout=...)`)."""


class FunctionTimeoutError(ExecutionError, TimeoutError):
    """The input ran longer than the class's `timeout`."""


class InputCancellation(Error):
    """The call was cancelled."""


class QueueFullError(Error):
    """The service's queue is at its bound; try again later."""


class RemoteError(Error):
    """A remote exception that could not be re-created in the caller (it could not be pickled).

    `exception_type` names the original type and `traceback` holds the remote traceback text.
    """

    def __init__(self, message: str, exception_type: str = "", traceback: str = "") -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.traceback = traceback

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}\n\nRemote traceback:\n{self.traceback}" if self.traceback else text


class RemoteTraceback(Exception):
    """Carries a remote traceback's text; set as `__cause__` of re-raised user exceptions."""

    def __init__(self, traceback: str) -> None:
        super().__init__(traceback)
        self.traceback = traceback

    def __str__(self) -> str:
        return f"\n\nRemote traceback (most recent call last):\n{self.traceback}"
