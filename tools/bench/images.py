#!/usr/bin/env python3
"""Images: build times (cold, then warm) and container starts with a built image vs the node's own
environment.

    .venv/bin/python tools/bench/images.py               # as root, with runc and mmdebstrap; 10 starts each
    .venv/bin/python tools/bench/images.py --runs 3      # quick

1. build: `debian_slim()` with 3 small pip packages through the node's builder, in a fresh store
   (no layer, an empty uv cache; the Debian base from the machine's cache, its own mmdebstrap time
   reported apart when --mmdebstrap is given), then the same build again (warm: every layer cached);
2. deploy, warm: `corral deploy` of an app whose image is built, from the command to its exit, beside
   `corral deploy` of the same app with no image (the build's share is the difference);
3. start: time to the first result of a new container (a new parameter value each sample) of the same
   class with `image=debian_slim()` and with no image, interleaved; their ratio.
Goals: a warm rebuild under 1 s; a start with a built image at most 1.3x one on the node's environment.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("six==1.17.0", "idna==3.10", "attrs==25.3.0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return f"median {statistics.median(ordered):7.3f} s   p90 {p90:7.3f} s   (n={len(ordered)})"


def build_times(mmdebstrap: bool) -> tuple[float, float, float | None]:
    import corral
    from corral_runtime import image_store, runtimes
    from corral_runtime.image_build import ImageBuilder
    from corral_runtime.image_store import ImageStore
    from corral_runtime.runc import RuncRuntime

    shared = ImageStore(image_store.default_root(Path("/var/lib/corral")))
    scratch = Path(tempfile.mkdtemp(prefix="corral-bench-images-", dir="/var/cache/corral"))
    try:
        store = ImageStore(scratch / "store")
        (store.root / "base" / "bookworm").symlink_to(shared.base_dir("bookworm"))
        isolation = runtimes.detect()
        assert isolation.mode == "runc", isolation.reason
        runtime = RuncRuntime(isolation.runtime_path, scratch / "node", cgroup_version=isolation.cgroup_version)
        builder = ImageBuilder(store, runtime)
        spec = corral.Image.debian_slim("3.11").pip_install(*PACKAGES).to_proto()

        async def fetch(_hash: str) -> Path:
            raise AssertionError("no local files")

        began = time.perf_counter()
        asyncio.run(builder.ensure(spec, fetch))
        cold = time.perf_counter() - began
        began = time.perf_counter()
        asyncio.run(builder.ensure(spec, fetch))
        warm = time.perf_counter() - began
        base = None
        if mmdebstrap:
            began = time.perf_counter()
            staging = scratch / "base-bench"
            subprocess.run(["mmdebstrap", "--variant=minbase", "--include=python3,python3-venv", "bookworm", str(staging)],
                           check=True, capture_output=True)
            base = time.perf_counter() - began
        return cold, warm, base
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class Cluster:
    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.log_path = root / "corral-up.log"
        self.port = free_port()
        self.env = dict(os.environ, CORRAL_HOME=str(self.home),
                        PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
        self.env.pop("CORRAL_SERVER_URL", None)
        self.env.pop("CORRAL_TOKEN", None)
        self._log = open(self.log_path, "a")
        self.process = subprocess.Popen([sys.executable, "-m", "corral.cli", "up", "--port", str(self.port), "--http-port", "0"],
                                        env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not (self.home / "server.json").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"corral up did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)

    def deploy_s(self, file: Path, name: str) -> float:
        began = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "corral.cli", "deploy", str(file), "--name", name], env=self.env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"corral deploy failed:\n{done.stdout}\n{done.stderr}")
        return time.perf_counter() - began

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--mmdebstrap", action="store_true", help="also time mmdebstrap's base (about 20-40 s)")
    args = parser.parse_args()
    cold, warm, base = build_times(args.mmdebstrap)
    print(f"build debian_slim() + pip {', '.join(PACKAGES)}: cold {cold:.2f} s (base cached; worker and pip layers built, "
          f"empty uv cache), warm {warm * 1000:.1f} ms (goal < 1 s)")
    if base is not None:
        print(f"mmdebstrap base (bookworm minbase + python3): {base:.1f} s")

    sys.path.insert(0, str(Path(__file__).parent))
    import corral

    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        try:
            app_file = Path(__file__).parent / "image_apps.py"
            cluster.deploy_s(app_file, "corral-bench-images")  # builds what is missing
            deploys = [cluster.deploy_s(app_file, "corral-bench-images") for _ in range(3)]
            print(f"corral deploy, image already built: {summary(deploys)}")
            client = corral.Client(f"grpc://127.0.0.1:{cluster.port}", (cluster.home / "token").read_text().strip())
            in_image = corral.Cls.from_name("corral-bench-images", "InImage", client=client)
            on_node = corral.Cls.from_name("corral-bench-images", "OnNode", client=client)
            in_image(key="warmup").echo.remote(1)
            on_node(key="warmup").echo.remote(1)
            image_s, node_s = [], []
            for _ in range(args.runs):
                for cls, samples in ((in_image, image_s), (on_node, node_s)):
                    began = time.perf_counter()
                    cls(key=secrets.token_hex(4)).echo.remote(1)
                    samples.append(time.perf_counter() - began)
        finally:
            cluster.stop()
    print(f"container start, built image:       {summary(image_s)}")
    print(f"container start, node's environment: {summary(node_s)}")
    print(f"ratio image / node (medians): {statistics.median(image_s) / statistics.median(node_s):.2f}x (goal <= 1.3x)")


if __name__ == "__main__":
    main()
