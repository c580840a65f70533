#!/usr/bin/env python3
"""The autoscaler under HTTP load: wrk's p99 at 64 connections on a trivial web endpoint, with the
default settings against the best fixed `max_containers`, measured in the same run.

    apt-get install wrk
    .venv/bin/python tools/bench/autoscale_wrk.py            # 10 s per setting
    .venv/bin/python tools/bench/autoscale_wrk.py --quick    # 4 s per setting

Each setting starts from zero containers (the class's scaledown window is 2 s and the benchmark
waits for it), then runs `wrk -t2 -c64 -d<s> --latency` against `Hello.hello`
(tools/bench/autoscale_apps.py). Containers started during the run are counted from `corral up`'s
log ("starting container ... for Hello"). The fixed settings use `update_autoscaler(max_containers=N)`.
Goal (issue 15): the default's p99 within 1.5x of the best fixed max_containers, and no more cold
starts than needed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from call_latency import CorralUp  # noqa: E402  (tools/bench, put on sys.path above)

CONNECTIONS = 64
FIXED = (1, 2, 4)


def wrk(url: str, seconds: int) -> tuple[float, float, int]:
    """(p99 seconds, requests per second, non-2xx responses) of one wrk run."""
    out = subprocess.run(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    p99 = re.search(r"^\s+99%\s+([0-9.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    rate = re.search(r"^Requests/sec:\s+([0-9.]+)", out, re.MULTILINE)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    done = re.search(r"^\s+(\d+) requests in", out, re.MULTILINE)
    if p99 is None or rate is None or done is None:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0}[p99.group(2)]
    latency = float(p99.group(1)) * scale if int(done.group(1)) else float("inf")  # nothing answered in time
    return latency, float(rate.group(1)), int(errors.group(1)) if errors else 0


def live_containers(client: object, app_id: str) -> int:
    from corral_protocol.v1 import control_pb2

    live = {control_pb2.CONTAINER_STATE_PENDING, control_pb2.CONTAINER_STATE_STARTING, control_pb2.CONTAINER_STATE_READY}
    found = client.call(client.stub.ListContainers, control_pb2.ListContainersRequest(app_id=app_id)).containers  # type: ignore[attr-defined]
    return sum(1 for c in found if c.state in live)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 s per setting instead of 10")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk")
    seconds = 4 if args.quick else 10
    import autoscale_apps  # type: ignore[import-not-found]  # tools/bench, on sys.path above

    import corral

    root = Path(tempfile.mkdtemp(prefix="corral-autoscale-bench-"))
    cluster = CorralUp(root)
    cluster.wait_ready()
    rows = []
    try:
        client = corral.Client(f"grpc://127.0.0.1:{cluster.port}", (cluster.home / "token").read_text().strip())
        with autoscale_apps.app.run(client=client):
            running = autoscale_apps.app.running
            assert running is not None
            url = running.web_urls["Hello.hello"]
            hello = autoscale_apps.Hello()
            for setting in ("default", *FIXED):
                if setting != "default":
                    hello.update_autoscaler(max_containers=int(setting))
                deadline = time.monotonic() + 120
                while live_containers(client, running.app_id) and time.monotonic() < deadline:
                    time.sleep(0.2)  # start from zero: the scaledown window is 2 s
                before = len(re.findall(r"starting container \S+ for Hello", cluster.log_path.read_text()))
                p99, rate, errors = wrk(url, seconds)
                started = len(re.findall(r"starting container \S+ for Hello", cluster.log_path.read_text())) - before
                rows.append((f"max_containers={setting}" if setting != "default" else "default settings", p99, rate, errors, started))
    finally:
        cluster.stop()
    print(f"wrk -t2 -c{CONNECTIONS} -d{seconds}s on a trivial GET endpoint; {Path('/proc/loadavg').read_text().split()[0]} load at the end")
    print(f"{'setting':<22} {'p99':>10} {'req/s':>10} {'non-2xx':>8} {'containers started':>19}")
    for label, p99, rate, errors, started in rows:
        print(f"{label:<22} {p99 * 1e3:>8.1f} ms {rate:>10,.0f} {errors:>8} {started:>19}")
    best = min(rows[1:], key=lambda r: r[1])
    ratio = rows[0][1] / best[1]
    print(f"goal: default p99 within 1.5x of the best fixed ({best[0]}, {best[1] * 1e3:.1f} ms): "
          f"{ratio:.2f}x -> {'met' if ratio <= 1.5 else 'NOT met'}")


if __name__ == "__main__":
    main()
