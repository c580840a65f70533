"""A class that keeps one container warm (min_containers=1) with default-only parameters."""

import os

import corral


def container_id() -> str:
    """Which container runs this code: every isolated container is pid 1 of its own pid namespace,
    so pids no longer tell containers apart (outside a container: this process's pid)."""
    return os.environ.get("CORRAL_CONTAINER_ID") or str(os.getpid())

app = corral.App("e2e-scaling-warm")


@app.cls(min_containers=1, scaledown_window=1)
class Warm:
    size: int = corral.parameter(default=3)

    @corral.enter()
    def setup(self):
        self.calls = 0

    @corral.method()
    def pid(self) -> str:
        self.calls += 1
        return container_id()
