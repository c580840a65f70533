"""Classes served by warm-pool containers (tests/e2e/test_warm_pool.py)."""

from __future__ import annotations

import os

import corral

app = corral.App("warm-pool")


@app.cls(secrets=[corral.Secret.from_name("warm-secret")], scaledown_window=2, cpu=(0.01, 8))
class Pooled:
    @corral.method()
    def identity(self) -> dict:
        """Its container id, its secret, and what its bundle directory holds."""
        return {"container": os.environ.get("CORRAL_CONTAINER_ID", ""), "secret": os.environ.get("WARM_SECRET", ""),
                "bundle": sorted(os.listdir(os.environ["CORRAL_BUNDLE_DIR"]))}

    @corral.method()
    def try_write_bundle(self) -> str:
        try:
            with open(os.path.join(os.environ["CORRAL_BUNDLE_DIR"], "planted.py"), "w") as f:
                f.write("x = 1\n")
        except OSError as err:
            return type(err).__name__
        return "ok"

    @corral.method()
    def find(self, name: str) -> list[str]:
        """Every path under / (but the kernel's and the system's directories) whose name is `name`."""
        found = []
        for root, dirs, files in os.walk("/"):
            dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/proc", "/sys", "/dev", "/usr")]
            if name in files or name in dirs:
                found.append(os.path.join(root, name))
        return found


@app.cls(memory=128, scaledown_window=2, cpu=(0.01, 8))
class PooledHog:
    @corral.method()
    def allocate(self, mib: int) -> int:
        chunks = [bytearray(1024 * 1024) for _ in range(mib)]
        for chunk in chunks:
            chunk[::4096] = b"x" * len(chunk[::4096])  # touch every page
        return len(chunks)
