"""A class that keeps one container warm (min_containers=1) with default-only parameters."""

import os

import corral

app = corral.App("e2e-scaling-warm")


@app.cls(min_containers=1, scaledown_window=1)
class Warm:
    size: int = corral.parameter(default=3)

    @corral.enter()
    def setup(self):
        self.calls = 0

    @corral.method()
    def pid(self) -> int:
        self.calls += 1
        return os.getpid()
