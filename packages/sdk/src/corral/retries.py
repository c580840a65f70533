"""Retry policy for inputs that fail."""

from __future__ import annotations

from dataclasses import dataclass

from corral.exception import InvalidError


@dataclass(frozen=True)
class Retries:
    """How often, and after what delay, a failed input runs again.

    A failed input is one whose code raised, timed out, or whose container died. Retries run after
    `initial_delay` seconds, growing by `backoff_coefficient` each time up to `max_delay`.

    Example:
        @app.cls(retries=corral.Retries(max_retries=3, backoff_coefficient=2.0, initial_delay=1.0))
        class Flaky: ...
    """

    max_retries: int
    backoff_coefficient: float = 2.0
    initial_delay: float = 1.0
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise InvalidError(f"Retries.max_retries must be an int, got {self.max_retries!r}")
        if not 0 <= self.max_retries <= 10:
            raise InvalidError(f"Retries.max_retries must be between 0 and 10, got {self.max_retries}")
        if not 1.0 <= self.backoff_coefficient <= 10.0:
            raise InvalidError(f"Retries.backoff_coefficient must be between 1 and 10, got {self.backoff_coefficient}")
        if not 0.0 <= self.initial_delay <= 60.0:
            raise InvalidError(f"Retries.initial_delay must be between 0 and 60 seconds, got {self.initial_delay}")
        if not 1.0 <= self.max_delay <= 60.0:
            raise InvalidError(f"Retries.max_delay must be between 1 and 60 seconds, got {self.max_delay}")

    @classmethod
    def from_count(cls, count: int) -> Retries:
        """`retries=N`: N retries, one second apart (Modal's meaning of a plain int)."""
        return cls(max_retries=count, backoff_coefficient=1.0, initial_delay=1.0)
