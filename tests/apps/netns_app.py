"""Classes for the network-namespace cluster (tests/e2e/test_netns_cluster.py): node-a declares
H100:8, node-b A100-80GB:4, node-c no GPU. Each method says which container served it and which
GPUs it sees."""

import os

import corral

app = corral.App("netns")

# Packing only: a tiny CPU reservation with no quota, so the 2-core test machine holds them all.
SMALL = {"cpu": (0.01, 8), "memory": (64, 1024), "scaledown_window": 600}


def _where() -> dict[str, str]:
    return {"container": os.environ.get("CORRAL_CONTAINER_ID", ""), "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")}


@app.cls(gpu="H100:2", **SMALL)
class TwoH100:
    @corral.method()
    def where(self) -> dict[str, str]:
        return _where()


@app.cls(gpu=["A100-80GB:2", "H100:2"], **SMALL)
class PrefersA100:
    """Two A100s if any node has them free, else two H100s. `slot` makes separate services."""

    slot: int = corral.parameter()

    @corral.method()
    def where(self) -> dict[str, str]:
        return _where()


@app.cls(gpu="T4", **SMALL)
class NeedsT4:
    @corral.method()
    def where(self) -> dict[str, str]:
        return _where()


@app.cls(**SMALL)
class Cpu:
    @corral.method()
    def where(self) -> dict[str, str]:
        return _where()

    @corral.method()
    def add(self, a: int, b: int) -> int:
        return a + b

    @corral.method()
    def gpus_of_two_h100(self) -> str:
        """A call from this container (its own token, over TLS with the node's CA) to another class."""
        return corral.Cls.from_name("e2e-netns", "TwoH100")().where.remote()["gpus"]
