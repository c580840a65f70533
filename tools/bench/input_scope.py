#!/usr/bin/env python3
"""The worker's cost per input of the fd-level log capture's bookkeeping.

    .venv/bin/python tools/bench/input_scope.py            # 200,000 scopes, best of 5, CPU time

Every input's user code runs inside `RunningInputs.scope` (which input runs, for attributing
lines written to fds 1 and 2; at its end the capture's pipes are drained with one `poll(0)`).
Measured in the same run: the baseline `corral.container_api.input_scope` (what the worker ran
around each input before), the scope without a capture installed, and the scope with one
installed on pipes standing in for fds 1 and 2. CPU time of this thread (`time.thread_time`), so
a loaded machine slows it less than wall time would.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from corral import container_api as sdk
from corral_runtime.fd_capture import FdCapture, RunningInputs


def per_scope_us(scope: Callable[[str], AbstractContextManager[None]], n: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.thread_time()
        for _ in range(n):
            with scope("fc-1"):
                pass
        best = min(best, (time.thread_time() - started) / n * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    baseline = per_scope_us(sdk.input_scope, args.n, args.rounds)
    running = RunningInputs()
    bare = per_scope_us(running.scope, args.n, args.rounds)
    out, err = os.pipe(), os.pipe()
    FdCapture(running, lambda *line: None).install((out[1], err[1]))
    captured = per_scope_us(running.scope, args.n, args.rounds)
    print(f"{'per input (CPU, best of ' + str(args.rounds) + ')':<44} {'us':>6}  vs baseline")
    for label, value in (("input_scope (baseline)", baseline), ("RunningInputs.scope, no capture", bare),
                         ("RunningInputs.scope, fd capture installed", captured)):
        print(f"{label:<44} {value:6.2f}  +{value - baseline:.2f} us")


if __name__ == "__main__":
    main()
