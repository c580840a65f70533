"""A deployable app for the deploy/CLI end-to-end tests (deployed under per-test names with --name)."""

import os
import time

import corral


def container_id() -> str:
    """Which container runs this code: every isolated container is pid 1 of its own pid namespace,
    so pids no longer tell containers apart (outside a container: this process's pid)."""
    return os.environ.get("CORRAL_CONTAINER_ID") or str(os.getpid())

app = corral.App("e2e-deploy")


def record(path: str, line: str) -> None:
    if path:
        with open(path, "a") as f:
            f.write(f"{line} pid={container_id()}\n")


@app.cls(scaledown_window=1)
class Model:
    events: str = corral.parameter(default="")
    tag: str = corral.parameter(default="a")

    @corral.enter()
    def setup(self):
        record(self.events, f"enter tag={self.tag}")
        self.count = 0

    @corral.exit()
    def teardown(self):
        record(self.events, f"exit tag={self.tag}")

    @corral.method()
    def hold(self, release: str) -> str:
        """Runs until the file `release` exists (a test releases it); each run is recorded."""
        record(self.events, f"hold tag={self.tag}")
        while not os.path.exists(release):
            time.sleep(0.05)
        return "released"

    @corral.method()
    def bump(self) -> int:
        self.count += 1
        return self.count

    @corral.method()
    def env(self, name: str) -> str | None:
        return os.environ.get(name)

    @corral.method()
    def pid(self) -> str:
        return container_id()

    @corral.method()
    def sleep(self, seconds: float) -> str:
        time.sleep(seconds)
        return "slept"


@app.cls(scaledown_window=1)
class SlowStart:
    """Its enter hook takes `delay_ms` milliseconds, so a test can act while a container is starting."""

    events: str = corral.parameter()
    delay_ms: int = corral.parameter(default=2000)

    @corral.enter()
    def setup(self):
        record(self.events, "enter:begin")
        time.sleep(self.delay_ms / 1000)
        record(self.events, "enter:end")

    @corral.exit()
    def teardown(self):
        record(self.events, "exit")

    @corral.method()
    def ping(self) -> str:
        return "pong"
