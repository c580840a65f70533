"""Classes for the simulated-GPU gap test: what a container sees of the GPUs it was given."""

from __future__ import annotations

import os

import corral

app = corral.App("gaps-gpu")


@app.cls(gpu="H100", cpu=(0.01, 8), scaledown_window=2)
class OneGpu:
    @corral.method()
    def visible(self) -> str | None:
        return os.environ.get("CUDA_VISIBLE_DEVICES")


@app.cls(gpu="H100:2", cpu=(0.01, 8), scaledown_window=2)
class TwoGpus:
    @corral.method()
    def visible(self) -> str | None:
        return os.environ.get("CUDA_VISIBLE_DEVICES")


@app.cls(gpu="H100", cpu=(0.01, 8), enable_memory_snapshot=True, scaledown_window=2)
class SnapGpu:
    @corral.enter(snap=True)
    def before_dump(self) -> None:
        self.during_snap = os.environ.get("CUDA_VISIBLE_DEVICES")

    @corral.enter(snap=False)
    def after_restore(self) -> None:
        self.after = os.environ.get("CUDA_VISIBLE_DEVICES")

    @corral.method()
    def seen(self) -> tuple[str | None, str | None]:
        return self.during_snap, self.after
