#!/usr/bin/env python3
"""Memory snapshots: time to first result of a new container, cold vs restored from a CRIU image.

    tools/bench/snapshot.py --setup                 # make .venv-bench (numpy, pandas, scipy + Corral)
    .venv-bench/bin/python tools/bench/snapshot.py  # 10 runs each (root and criu needed)
    .venv-bench/bin/python tools/bench/snapshot.py --runs 3 --gb 0.25   # quick

The class (tools/bench/snapshot_apps.py) imports numpy, pandas and scipy and builds about `--gb` GB
of Python and numpy state in its start-up. Each sample waits until the class has no container, then
times `.remote()` from the call to its result:

1. cold: `Cold`, the start-up as a plain @enter (a new process imports and builds everything);
2. restored x1: `Snapshotted`, the start-up as @enter(snap=True), restored from the image taken by
   its first container (that first, image-taking start is reported on its own);
3. restored x4: four calls at once, each holding its container for HOLD_S (subtracted), so four
   containers restore side by side;
4. fork-server baseline: a parent process that has already imported everything and built the state
   forks a child per sample; the time from the request to the child's answer.

The node's own restore time (criu restore, from its log) is reported against the image size.
Restores use CRIU lazy pages where the node supports them; CORRAL_SNAPSHOT_LAZY_PAGES=off measures
eager restores (every page copied before the worker runs).
Goals: restored >= 10x faster than cold; restore <= 1.2 s per GB of image + 100 ms; time to the first
result at most twice the restore (runc's whole restore, and CRIU's own part of it, both printed).
The cluster's directory (in $TMPDIR) is removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH_VENV = ROOT / ".venv-bench"
HOLD_S = 2.0


def setup() -> None:
    """The benchmark's own virtualenv: Corral editable plus numpy, pandas, scipy (not core deps)."""
    if not (BENCH_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
    packages = [f"-e{ROOT / 'packages' / p}" for p in ("protocol", "sdk", "scheduler", "runtime")]
    subprocess.run([str(BENCH_VENV / "bin" / "pip"), "install", "-q", *packages, "numpy", "pandas", "scipy"], check=True)
    print(f"ready: {BENCH_VENV}/bin/python {Path(__file__).relative_to(ROOT)}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return f"median {statistics.median(ordered):7.3f} s   p90 {p90:7.3f} s   (n={len(ordered)})"


class Cluster:
    def __init__(self, root: Path, gb: float) -> None:
        self.home = root / "home"
        self.log_path = root / "corral-up.log"
        self.port = free_port()
        env = dict(os.environ, CORRAL_HOME=str(self.home),
                   PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
        env.pop("CORRAL_SERVER_URL", None)
        env.pop("CORRAL_TOKEN", None)
        self._log = open(self.log_path, "a")
        self.process = subprocess.Popen([sys.executable, "-m", "corral.cli", "up", "--port", str(self.port), "--http-port", "0"],
                                        env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not (self.home / "server.json").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"corral up did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


def live_containers(client: object, class_name: str) -> int:
    from corral_protocol.v1 import control_pb2

    found = client.call(client.stub.ListContainers, control_pb2.ListContainersRequest()).containers  # type: ignore[attr-defined]
    return sum(1 for c in found if c.class_name == class_name)


def wait_no_containers(client: object, class_name: str) -> None:
    deadline = time.monotonic() + 120
    while live_containers(client, class_name):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{class_name}'s containers did not scale down")
        time.sleep(0.1)


def timed_calls(cls: object, n: int, hold_s: float) -> tuple[list[float], set[str]]:
    """n calls at once; each one's time to its result, less the time it held its container."""
    def one(_: int) -> tuple[float, str]:
        began = time.perf_counter()
        result = cls().first.remote(hold_s)  # type: ignore[operator]
        return time.perf_counter() - began - hold_s, result["container"]

    with ThreadPoolExecutor(n) as pool:
        done = list(pool.map(one, range(n)))
    return [t for t, _ in done], {c for _, c in done}


def fork_server_samples(runs: int, gb: float) -> list[float]:
    """A parent that imported everything and built the state forks a child per request."""
    code = f"""
import os, sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from snapshot_apps import build_state
state = build_state({gb})
sys.stdout.write("ready\\n"); sys.stdout.flush()
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        sys.stdout.write(f"{{len(state['objects'])}}\\n"); sys.stdout.flush()
        os._exit(0)
    os.waitpid(pid, 0)
"""
    server = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdin is not None and server.stdout is not None
    assert server.stdout.readline().strip() == "ready"
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        server.stdin.write("go\n")
        server.stdin.flush()
        server.stdout.readline()
        samples.append(time.perf_counter() - began)
    server.stdin.close()
    server.wait()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", action="store_true", help="create .venv-bench and exit")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--gb", type=float, default=1.0, help="state built by the start-up, in GB")
    parser.add_argument("--keep", action="store_true", help="keep the cluster's directory (its log, the node's work files)")
    args = parser.parse_args()
    if args.setup:
        setup()
        return
    try:
        import numpy  # noqa: F401
        import pandas  # noqa: F401
        import scipy  # noqa: F401
    except ImportError:
        raise SystemExit("numpy, pandas and scipy are missing: run tools/bench/snapshot.py --setup, then use .venv-bench/bin/python") from None
    import corral

    sys.path.insert(0, str(Path(__file__).parent))
    import snapshot_apps

    root = Path(tempfile.mkdtemp(prefix="corral-snapshot-bench-"))
    cluster = Cluster(root, args.gb)
    try:
        client = corral.Client(f"grpc://127.0.0.1:{cluster.port}", (cluster.home / "token").read_text().strip())
        cold_cls = functools.partial(snapshot_apps.Cold, gb=args.gb)
        snapshotted_cls = functools.partial(snapshot_apps.Snapshotted, gb=args.gb)
        with snapshot_apps.app.run(client=client):
            cold, restored1, restored4, first = [], [], [], []
            for _ in range(args.runs):
                wait_no_containers(client, "Cold")
                cold += timed_calls(cold_cls, 1, 0.0)[0]
            wait_no_containers(client, "Cold")
            first = timed_calls(snapshotted_cls, 1, 0.0)[0]  # takes the image
            for _ in range(args.runs):
                wait_no_containers(client, "Snapshotted")
                restored1 += timed_calls(snapshotted_cls, 1, 0.0)[0]
            log_before_4 = len(cluster.log())
            distinct = []
            for _ in range(args.runs):
                wait_no_containers(client, "Snapshotted")
                samples, containers = timed_calls(snapshotted_cls, 4, HOLD_S)
                restored4 += samples
                distinct.append(len(containers))
            from corral_protocol.v1 import control_pb2

            images = client.call(client.stub.ListSnapshots, control_pb2.ListSnapshotsRequest()).snapshots
            image_gb = max(s.image.size_bytes for s in images) / 1e9
        log = cluster.log()
    finally:
        cluster.stop()
        if args.keep:
            print(f"kept {root} (the cluster's log: {cluster.log_path})")
        else:
            from corral_runtime import image_store

            image_store.discard(root)  # unmounts anything a killed node left under it first
    fork = fork_server_samples(args.runs, args.gb)

    pattern = r"restored from snapshot \S+ in ([0-9.]+) s"
    restore_s = [float(m) for m in re.findall(pattern, log[:log_before_4])]
    restore4_s = [float(m) for m in re.findall(pattern, log[log_before_4:])]
    takes = re.findall(r"dumped pid \d+ as snapshot \S+ \((\d+) MB in ([0-9.]+) s\)", log)
    print(f"state {args.gb:g} GB; image {image_gb:.2f} GB; {os.cpu_count()} cpus; python {sys.version.split()[0]}")
    print(f"cold start                  {summary(cold)}")
    print(f"first start (takes image)   {summary(first)}   dump: {', '.join(f'{s} s' for _, s in takes)}")
    print(f"restored, 1 at a time       {summary(restored1)}")
    print(f"restored, 4 at once         {summary(restored4)}   distinct containers per run: {distinct}")
    print(f"fork-server baseline        {summary(fork)}")
    print(f"node restore (criu), 1      {summary(restore_s)}")
    print(f"node restore (criu), 4      {summary(restore4_s)}")
    lazy = len(re.findall(r"restored from snapshot \S+ in [0-9.]+ s \(\d+ MB image, lazy pages\)", log))
    print(f"restores with lazy pages    {lazy} of {len(restore_s) + len(restore4_s)} "
          f"(CORRAL_SNAPSHOT_LAZY_PAGES={os.environ.get('CORRAL_SNAPSHOT_LAZY_PAGES', 'auto')})")
    fallbacks = len(re.findall(r"starting cold instead", log))
    problems = sample_problems(args.runs, len(restore_s), len(restore4_s), distinct, fallbacks)
    for problem in problems:
        print(f"NOT VERIFIED: {problem}")
    speedup = statistics.median(cold) / statistics.median(restored1)
    budget = 1.2 * image_gb + 0.1
    print(f"goal: restored >= 10x faster than cold: {speedup:.1f}x -> {verdict(speedup >= 10, problems)}")
    restore_median = statistics.median(restore_s) if restore_s else float("nan")
    print(f"goal: restore <= 1.2 s/GB + 0.1 s = {budget:.2f} s: node restore median {restore_median:.2f} s, "
          f"time to first result median {statistics.median(restored1):.2f} s -> "
          f"{verdict(statistics.median(restored1) <= budget, problems)}")
    plumbing = statistics.median(restored1) / restore_median if restore_s else float("nan")
    print(f"goal: time to first result <= 2x the node's restore: {statistics.median(restored1):.3f} s / {restore_median:.3f} s "
          f"= {plumbing:.1f}x -> {verdict(plumbing <= 2, problems)}")
    isolated = len(re.findall(r"restored from snapshot \S+ in [0-9.]+ s \([^)]*\) by runc", log))
    criu_own = [float(m) for m in re.findall(r"by runc; criu restore ([0-9.]+) s", log[:log_before_4])]
    daemon_ready = [float(m) for m in re.findall(r"lazy-pages daemon ready after ([0-9.]+) s", log[:log_before_4])]
    if criu_own:
        print(f"  of which CRIU itself, 1     {summary(criu_own)}")
        strict = statistics.median(restored1) / statistics.median(criu_own)
        print(f"goal: time to first result <= 2x CRIU's own restore: {statistics.median(restored1):.3f} s / "
              f"{statistics.median(criu_own):.3f} s = {strict:.1f}x -> {verdict(strict <= 2, problems)}")
    if daemon_ready:
        print(f"  of which lazy daemon ready  {summary(daemon_ready)}")
    print(f"restores by runc            {isolated} of {len(restore_s) + len(restore4_s)}")


def sample_problems(runs: int, restores_1: int, restores_4: int, distinct: list[int], fallbacks: int) -> list[str]:
    """Why the restored samples may not measure restores: a goal is "met" only when every restored
    sample was logged as a restore by the node (none fell back to a cold start) and every x4 run used
    four containers."""
    problems = []
    if restores_1 < runs:
        problems.append(f"the node logged {restores_1} restore(s) for {runs} restored-x1 sample(s)")
    if restores_4 < 4 * runs:
        problems.append(f"the node logged {restores_4} restore(s) for {4 * runs} restored-x4 sample(s)")
    if fallbacks:
        problems.append(f"{fallbacks} restore(s) fell back to a cold start")
    if any(n != 4 for n in distinct):
        problems.append(f"the x4 runs used {distinct} distinct containers, not 4 each")
    return problems


def verdict(goal_holds: bool, problems: list[str]) -> str:
    if problems:
        return "NOT met (the samples are not all restores; see NOT VERIFIED above)"
    return "met" if goal_holds else "NOT met"


if __name__ == "__main__":
    main()
