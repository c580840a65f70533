"""A deployable app for the node failure tests (tests/faults/test_node_failure.py)."""

import os
import time

import corral

app = corral.App("node-failure")


@app.cls(scaledown_window=2)
class Holder:
    tag: str = corral.parameter(default="a")
    events: str = corral.parameter(default="")

    @corral.exit()
    def teardown(self):
        if self.events:
            with open(self.events, "a") as f:
                f.write(f"exit tag={self.tag}\n")

    @corral.method()
    def hold(self, marker: str, seconds: float) -> str:
        """Sleeps `seconds` the first time it runs for `marker` (a path in the shared directory) and
        returns at once after, so an input lost with its node runs long and its retry is quick."""
        if not os.path.exists(marker):
            open(marker, "w").close()
            time.sleep(seconds)
        return "held"

    @corral.method()
    def where(self) -> str:
        """The container this runs in."""
        return os.environ.get("CORRAL_CONTAINER_ID", "")
