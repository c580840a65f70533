"""The class tools/bench/cluster_start.py starts many containers of: it does nothing but exist."""

import os

import corral

app = corral.App("cluster-start")


@app.cls(cpu=(0.01, 8), memory=(32, 512), scaledown_window=600)
class Idle:
    """`batch` makes separate services: the baseline's and the 200's."""

    batch: str = corral.parameter()

    @corral.method()
    def where(self) -> str:
        return os.environ.get("CORRAL_CONTAINER_ID", "")
