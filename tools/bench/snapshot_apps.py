"""Classes the snapshot benchmark runs (tools/bench/snapshot.py): the same heavy start-up, once
behind a memory snapshot and once as a plain cold start.

The start-up imports numpy, pandas and scipy and builds about `gb` (a parameter, default 1) GB of
state: 70% as a numpy array of random floats (every page touched, nothing compressible), 30% as
Python objects (a dict of ints to strings).
"""

import os
import time

import corral

app = corral.App("corral-snapshot-bench")


def build_state(gb: float) -> dict:
    import numpy as np
    import pandas as pd
    import scipy.linalg  # noqa: F401  (imported for its start-up cost)

    array = np.random.default_rng(0).random(int(gb * 0.7e9) // 8)
    # About 100 bytes per entry: an int key, a short str value and the dict slot.
    objects = {i: f"value-{i}" for i in range(int(gb * 0.3e9) // 100)}
    frame = pd.DataFrame({"x": array[:1000]})
    return {"array": array, "objects": objects, "frame": frame}


@app.cls(enable_memory_snapshot=True, scaledown_window=1, max_containers=4, cpu=(0.01, 8), memory=(64, 8192))
class Snapshotted:
    gb: float = corral.parameter(default=1.0)  # a parameter, not the node's environment: containers do not inherit it

    @corral.enter(snap=True)
    def load(self):
        self.state = build_state(self.gb)

    @corral.method()
    def first(self, hold_s: float = 0.0) -> dict:
        time.sleep(hold_s)
        return {"container": os.environ["CORRAL_CONTAINER_ID"], "entries": len(self.state["objects"])}


@app.cls(scaledown_window=1, max_containers=4, cpu=(0.01, 8), memory=(64, 8192))
class Cold:
    gb: float = corral.parameter(default=1.0)

    @corral.enter()
    def load(self):
        self.state = build_state(self.gb)

    @corral.method()
    def first(self, hold_s: float = 0.0) -> dict:
        time.sleep(hold_s)
        return {"container": os.environ["CORRAL_CONTAINER_ID"], "entries": len(self.state["objects"])}
