"""A snapshot-enabled class: its snap hook builds state and records itself in an events file."""

import os
import random
import time

import corral

app = corral.App("snapshots")

# The tests create this secret with a random value, so the value is nowhere in this module's code.
SECRET_NAME = "snapshot-test-secret"
STATE_MARKER = "corral-snapshot-state-marker-41b7"


def record(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(f"{line} ct={os.environ.get('CORRAL_CONTAINER_ID', '?')}\n")


@app.cls(enable_memory_snapshot=True, scaledown_window=600, max_containers=4,
         secrets=[corral.Secret.from_name(SECRET_NAME)])
class Snappy:
    events: str = corral.parameter()

    @corral.enter(snap=True)
    def build(self):
        record(self.events, f"snap secret={os.environ.get('SNAP_TEST_SECRET', '-')}")
        self.table = {i: str(i) * 3 for i in range(50_000)}
        self.loaded_in = os.environ.get("CORRAL_CONTAINER_ID")
        self.marker = "-".join([STATE_MARKER, "built"])  # a string made at run time, in the heap

    @corral.enter()
    def setup(self):
        record(self.events, "enter")

    @corral.method()
    def describe(self, hold_s: float = 0.0) -> dict:
        container = os.environ["CORRAL_CONTAINER_ID"]
        print(f"print from {container}")
        os.write(1, f"fd-level from {container}\n".encode())  # captured below Python, also in a restored copy
        time.sleep(hold_s)
        return {
            "container": os.environ["CORRAL_CONTAINER_ID"],
            "table": len(self.table),
            "loaded_in": self.loaded_in,
            "secret": os.environ.get("SNAP_TEST_SECRET"),
            "random": random.random(),
            "pid": os.getpid(),
        }
