"""Classes for the fault suite's gap tests: a hog and a bystander that compete for a full node,
retries of user exceptions and timeouts, and an @enter hook that fails."""

from __future__ import annotations

import os
import time

import corral

app = corral.App("gaps")


def _count(path: str) -> int:
    """Append one line to `path` and return how many it now holds (this attempt's number)."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    with open(path) as f:
        return len(f.read().splitlines())


@app.cls(scaledown_window=30)
class Hog:
    @corral.method()
    def work(self, seconds: float) -> str:
        time.sleep(seconds)
        return "worked"


@app.cls(scaledown_window=30)
class Bystander:
    @corral.method()
    def ping(self) -> str:
        return "pong"


class Flaky(Exception):
    """A user exception the retry policy retries."""


@app.cls(scaledown_window=5, retries=corral.Retries(max_retries=2, initial_delay=0.1), timeout=2)
class Retried:
    @corral.method()
    def fail_until(self, path: str, succeed_on: int) -> int:
        attempt = _count(path)
        if attempt < succeed_on:
            raise Flaky(f"attempt {attempt} fails")
        return attempt

    @corral.method()
    def hang_once(self, path: str) -> int:
        attempt = _count(path)
        if attempt == 1:
            time.sleep(30)  # past the class's timeout: killed, and retried
        return attempt


@app.cls(scaledown_window=5, retries=3)
class BadEnter:
    path: str = corral.parameter()

    @corral.enter()
    def setup(self) -> None:
        _count(self.path)
        raise RuntimeError("enter fails")

    @corral.method()
    def work(self) -> str:
        return "unreachable"


@app.cls(scaledown_window=60)
class HangingExit:
    """Its @exit hook never returns: the control plane kills it after the stop grace."""

    path: str = corral.parameter()

    @corral.exit()
    def teardown(self) -> None:
        _count(self.path)
        while True:
            time.sleep(1)

    @corral.method()
    def pid(self) -> int:
        return os.getpid()
