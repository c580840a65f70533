"""Classes that ask for GPUs, for the simulated-GPU end-to-end test (`corral up` with
CORRAL_SIMULATE_GPUS=H100:4)."""

import os

import corral

app = corral.App("gpu")


@app.cls(gpu="H100:2", scaledown_window=600)
class TwoH100:
    @corral.method()
    def devices(self) -> str:
        return os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")


@app.cls(gpu=["A100-80GB", "H100"], scaledown_window=600)
class FallsBackToH100:
    @corral.method()
    def devices(self) -> str:
        return os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")


@app.cls(gpu="A100-80GB:2")
class NeedsA100:
    @corral.method()
    def devices(self) -> str:
        return os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")


@app.cls()
class CpuOnly:
    @corral.method()
    def devices(self) -> str:
        return os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
