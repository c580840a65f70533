#!/usr/bin/env python3
"""A 1 GB argument through `.spawn()`: time, and the memory of the control plane and the client.

    .venv/bin/python tools/bench/big_payload.py [--mib 1024]

Run once by hand (not in the suite): it needs about 4 GB of free memory (the client's bytes and
their pickle, the worker's copies). Starts `corral up` with a temporary CORRAL_HOME (tools/bench/
call_latency.py's CorralUp), spawns `Sink.digest(data)` (tools/bench/big_payload_apps.py) and
checks the sha256 the container computed. The argument travels as a content-addressed blob
(`PutBlob` from the client, `GetBlob` by the worker); the control plane streams it to and from a
file. Baseline in the same run: writing the same bytes to a file in the same directory and
hashing them (what the blob path cannot beat, per copy).

Printed: the spawn-to-result time, the baseline, their ratio; the control plane's peak RSS (VmHWM)
before and after; the client's and the worker's peak RSS against the payload size.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from call_latency import CorralUp  # noqa: E402


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker_peak_rss_mib(container_id: str) -> float:
    """The peak RSS of the container's worker process, seen from the host (runc or plain processes)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"corral_runtime.worker" in (entry / "cmdline").read_bytes() and container_id.encode() in (entry / "environ").read_bytes():
                return peak_rss_mib(int(entry.name))
        except OSError:
            continue
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="the argument's size in MiB (default 1024)")
    args = parser.parse_args()
    import big_payload_apps

    import corral

    with tempfile.TemporaryDirectory() as tmp:
        cluster = CorralUp(Path(tmp))
        try:
            cluster.wait_ready()
            token = (cluster.home / "token").read_text().strip()
            client = corral.Client(f"grpc://127.0.0.1:{cluster.port}", token)
            with big_payload_apps.app.run(client=client):
                sink = big_payload_apps.Sink()
                assert sink.digest.remote(b"warm") == hashlib.sha256(b"warm").hexdigest()
                plane_before = peak_rss_mib(cluster.process.pid)
                data = os.urandom(args.mib * 1024 * 1024)
                expected = hashlib.sha256(data).hexdigest()
                start = time.perf_counter()
                call = sink.digest.spawn(data)
                spawned_s = time.perf_counter() - start
                got = call.get(timeout=1800)
                total_s = time.perf_counter() - start
                plane_after = peak_rss_mib(cluster.process.pid)
                from corral_protocol.v1 import control_pb2

                listed = client.call(client.stub.ListContainers, control_pb2.ListContainersRequest()).containers
                worker_peak = max((worker_peak_rss_mib(c.container_id) for c in listed if c.class_name == "Sink"), default=float("nan"))
                assert got == expected, "the container saw other bytes"
            client.close()
            start = time.perf_counter()
            baseline = Path(tmp) / "baseline"
            with baseline.open("wb") as f:
                f.write(data)
            hashlib.sha256(baseline.read_bytes()).hexdigest()
            baseline_s = time.perf_counter() - start
        finally:
            cluster.stop()
    client_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"argument                                {args.mib} MiB (sha256 checked in the container)")
    print(f".spawn() returned (upload done)         {spawned_s:7.2f} s")
    print(f".spawn() to result                      {total_s:7.2f} s")
    print(f"baseline: write to a file + sha256      {baseline_s:7.2f} s")
    print(f"ratio, spawn-to-result / baseline       {total_s / baseline_s:7.1f}x")
    print(f"control plane peak RSS before / after   {plane_before:7.0f} / {plane_after:.0f} MiB")
    print(f"client peak RSS                         {client_peak:7.0f} MiB ({client_peak / args.mib:.2f}x the payload)")
    print(f"worker peak RSS                         {worker_peak:7.0f} MiB ({worker_peak / args.mib:.2f}x the payload)")


if __name__ == "__main__":
    main()
