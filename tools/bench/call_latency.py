"""Call latency, throughput and cold start of Corral, next to a raw gRPC echo measured in the same run.

    .venv/bin/python tools/bench/call_latency.py            # full run (about a minute on 2 cores)
    .venv/bin/python tools/bench/call_latency.py --quick    # smoke run (under 30 s)
    .venv/bin/python tools/bench/call_latency.py --json out.json
    .venv/bin/python tools/bench/call_latency.py --warm-pool 0   # the isolated node without its warm pool

What it measures, in one process:

1. Baseline: a raw gRPC echo. A `grpc.aio` server in a subprocess (a generic handler with identity
   bytes (de)serializers), a sync `grpc.insecure_channel` client making unary calls with a small
   payload: p50/p99 over N sequential calls, and throughput with 16 threads sharing the channel.
2. Corral warm `.remote()`: p50/p99 of a trivial method (`Echo.echo`, tools/bench/bench_apps.py)
   against a `corral up` subprocess with a temporary CORRAL_HOME on a free port. Beside it, the
   queued paths: `.remote()` through the control plane's queue (retries=1), and `.spawn().get()`,
   whose call the control plane also writes to its store (a durable call).
3. Corral throughput with 16 threads calling `.remote()`: on the default class (max_inputs=1, so
   it is pre-scaled to 16 containers) and on `Echo.with_concurrency(max_inputs=16)` (one container).
4. Cold start: `Cold(key=<new value>).echo.remote(1)` each sample, so each call finds a new service
   at zero containers; wall time from the call to its result (median, p90). The container's own
   share (the control plane's "starting container" to "container ready" log lines) and the cost of a
   bare `python -c "import corral_runtime.worker"` are printed beside it.
5. The sandbox's share of a cold start: the same cold starts against a second `corral up` whose node
   runs plain processes (CORRAL_NODE_ISOLATION=none), in the same run; the difference of the medians
   is what runc (OCI bundle, cgroup, namespaces, mounts) adds. Skipped when the first node is not
   isolated (then both would be plain processes).
6. The warm pool's share: the isolated node runs with its warm pool (`--warm-pool N`, default the
   node's default, 2), and the same cold starts run against a third `corral up`, isolated without a
   pool (CORRAL_NODE_WARM_POOL=0); the difference of the medians is what the pool saves.

Goals checked: warm p50 <= 3x the echo p50, a trivial cold start under 1 s, and under 250 ms
(isolated) on this project's 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral_protocol import env as corral_env

HERE = Path(__file__).resolve().parent
ECHO_METHOD = "/corral.bench.Echo/Echo"
ECHO_PAYLOAD = b"x" * 100  # about the size of a Corral InvokeRequest for a small argument
THREADS = 16
WARM_P50_GOAL_RATIO = 3.0
COLD_START_GOAL_S = 1.0
ISOLATED_COLD_START_GOAL_S = 0.25


@dataclass(frozen=True)
class Settings:
    latency_calls: int
    latency_warmup: int
    throughput_s: float
    throughput_warmup_s: float
    cold_samples: int
    cold_pause_s: float
    import_samples: int


FULL = Settings(
    latency_calls=2000,
    latency_warmup=200,
    throughput_s=4.0,
    throughput_warmup_s=1.0,
    cold_samples=10,
    cold_pause_s=0.5,
    import_samples=3,
)
QUICK = Settings(
    latency_calls=300,
    latency_warmup=50,
    throughput_s=1.0,
    throughput_warmup_s=0.3,
    cold_samples=3,
    cold_pause_s=0.3,
    import_samples=1,
)


# Statistics ---------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class CpuMeter:
    """CPU seconds (user + system, all threads) used so far by this process and by a server process
    and its descendants, read from /proc. Descendants are the Corral containers (worker processes)."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.tick = os.sysconf("SC_CLK_TCK")

    def _cpu(self, pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick

    def _children(self, pid: int) -> list[int]:
        kids: list[int] = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += [int(k) for k in (task / "children").read_text().split()]
        return kids

    def snapshot(self) -> dict[str, float]:
        usage = os.times()
        out = {"client": usage.user + usage.system, "server": self._cpu(self.server_pid), "containers": 0.0}
        stack = self._children(self.server_pid)
        while stack:
            pid = stack.pop()
            try:
                out["containers"] += self._cpu(pid)
                stack += self._children(pid)
            except (OSError, ValueError):
                pass  # exited meanwhile
        return out

    @staticmethod
    def available() -> bool:
        return Path("/proc/self/task").is_dir()


@dataclass
class Latency:
    samples: list[float]
    cpu_per_call: dict[str, float] = field(default_factory=dict)

    @property
    def p50(self) -> float:
        return percentile(self.samples, 50)

    @property
    def p90(self) -> float:
        return percentile(self.samples, 90)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 99)


@dataclass
class Throughput:
    calls: int
    seconds: float
    latency: Latency

    @property
    def per_s(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0


def measure_latency(call: Callable[[], Any], n: int, warmup: int, meter: CpuMeter | None = None) -> Latency:
    for _ in range(warmup):
        call()
    samples = []
    clock = time.perf_counter
    before = meter.snapshot() if meter else None
    for _ in range(n):
        start = clock()
        call()
        samples.append(clock() - start)
    cpu = {k: (v - before[k]) / n for k, v in meter.snapshot().items()} if meter and before else {}
    return Latency(samples, cpu)


def measure_throughput(call: Callable[[], Any], threads: int, seconds: float) -> Throughput:
    """`threads` threads call `call()` back to back for `seconds`; calls finished / time until the last one returned."""
    barrier = threading.Barrier(threads + 1)
    per_thread: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    ends: list[float] = []
    state: dict[str, float] = {}

    def worker(index: int) -> None:
        samples = per_thread[index]
        clock = time.perf_counter
        barrier.wait()
        deadline = state["deadline"]
        try:
            while clock() < deadline:
                start = clock()
                call()
                samples.append(clock() - start)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        ends.append(clock())

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    start = time.perf_counter()
    state["deadline"] = start + seconds
    barrier.wait()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]
    samples = [s for thread_samples in per_thread for s in thread_samples]
    return Throughput(len(samples), max(ends) - start, Latency(samples))


# Raw gRPC echo --------------------------------------------------------------------------------------


def serve_echo(port: int) -> None:
    """`--echo-server PORT`: a grpc.aio server that returns the request bytes."""
    import grpc

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    async def main() -> None:
        handler = grpc.method_handlers_generic_handler(
            "corral.bench.Echo",
            {"Echo": grpc.unary_unary_rpc_method_handler(echo, request_deserializer=None, response_serializer=None)},
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EchoResults:
    latency: Latency
    throughput: Throughput


def bench_echo(settings: Settings) -> EchoResults:
    import grpc

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--echo-server", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("the echo server did not start")
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        rpc: Any = channel.unary_unary(ECHO_METHOD, request_serializer=None, response_deserializer=None)

        def call() -> None:
            assert rpc(ECHO_PAYLOAD) == ECHO_PAYLOAD

        meter = CpuMeter(server.pid) if CpuMeter.available() else None
        latency = measure_latency(call, settings.latency_calls, settings.latency_warmup, meter)
        measure_throughput(call, THREADS, settings.throughput_warmup_s)
        throughput = measure_throughput(call, THREADS, settings.throughput_s)
        channel.close()
        return EchoResults(latency, throughput)
    finally:
        server.terminate()
        server.wait(timeout=10)


# Corral ---------------------------------------------------------------------------------------------


class CorralUp:
    """A `corral up --port P` subprocess with its own CORRAL_HOME."""

    def __init__(self, root: Path, extra_env: dict[str, str] | None = None) -> None:
        self.home = root / "home"
        self.home.mkdir(parents=True)
        self.port = free_port()
        self.log_path = root / "corral-up.log"
        env = dict(os.environ, CORRAL_HOME=str(self.home), **(extra_env or {}))
        env.pop("CORRAL_SERVER_URL", None)
        env.pop("CORRAL_TOKEN", None)
        self._log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "corral.cli", "up", "--port", str(self.port), "--http-port", "0"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not (self.home / "server.json").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"corral up did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 60) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@dataclass
class ColdResults:
    latency: Latency
    container_start_to_ready: list[float] = field(default_factory=list)
    isolation: str = ""  # the node's container runtime: runc, or none (reason)
    without_isolation: Latency | None = None  # the same cold starts on a node running plain processes
    warm_pool: int = 0  # the isolated node's warm pool size (containers started ahead)
    without_pool: Latency | None = None  # the same cold starts on an isolated node without a warm pool


@dataclass
class CorralResults:
    warm: Latency
    queued: Latency  # `.remote()` through the control plane's queue (retries=1 keeps it off the direct path)
    spawned: Latency  # `.spawn(...).get()`: the queue, plus the durable call's writes to the store
    throughput_max1: Throughput | None
    scale_up_16_s: float | None
    throughput_max16: Throughput
    cold: ColdResults


def wait_for_ready_containers(app: Any, class_name: str, max_inputs: int, count: int, timeout: float = 120) -> None:
    from corral_protocol.v1 import control_pb2

    client, app_id = app.running.client, app.running.app_id
    deadline = time.monotonic() + timeout
    while True:
        response = client.call(client.stub.ListContainers, control_pb2.ListContainersRequest(app_id=app_id))
        ready = [
            c
            for c in response.containers
            if c.class_name == class_name and c.max_inputs == max_inputs and c.state == control_pb2.CONTAINER_STATE_READY
        ]
        if len(ready) >= count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(ready)} of {count} {class_name} containers became ready in {timeout:g} s")
        time.sleep(0.05)


_LOG_TIME = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
_STARTING = re.compile(_LOG_TIME + r" \w+ starting container (\S+) for Cold ")
_READY = re.compile(_LOG_TIME + r" \w+ container (\S+) ready \(Cold\)")


def container_start_to_ready(log_text: str) -> list[float]:
    """From `corral up`'s log: for each Cold container, seconds from "starting container" to "ready"."""

    def stamp(text: str) -> float:
        return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()

    started = {m.group(2): stamp(m.group(1)) for m in _STARTING.finditer(log_text)}
    ready = {m.group(2): stamp(m.group(1)) for m in _READY.finditer(log_text)}
    return [ready[c] - started[c] for c in started if c in ready]


def bench_corral(cluster: CorralUp, settings: Settings, quick: bool) -> CorralResults:
    os.environ["CORRAL_HOME"] = str(cluster.home)
    os.environ.pop("CORRAL_SERVER_URL", None)
    os.environ.pop("CORRAL_TOKEN", None)
    sys.path.insert(0, str(HERE))
    import bench_apps  # type: ignore[import-not-found]  # tools/bench, put on sys.path above

    app = bench_apps.app
    with app.run():
        # Warm latency: the first call starts the container; the warm-up calls make it warm.
        echo = bench_apps.Echo()
        meter = CpuMeter(cluster.process.pid) if CpuMeter.available() else None
        warm = measure_latency(lambda: echo.echo.remote("hello"), settings.latency_calls, settings.latency_warmup, meter)
        # The queued paths, on one container: a waited call, and a spawned (durable) one.
        queued_echo = bench_apps.Echo.with_options(retries=1)()
        queued = measure_latency(lambda: queued_echo.echo.remote("hello"), settings.latency_calls, settings.latency_warmup, None)
        spawned = measure_latency(lambda: queued_echo.echo.spawn("hello").get(), settings.latency_calls, settings.latency_warmup, None)

        cold_samples = measure_cold_starts(bench_apps, settings)

        # Throughput, default concurrency (max_inputs=1): pre-scale to one container per caller.
        throughput_max1 = scale_up_16_s = None
        if not quick:
            start = time.perf_counter()
            echo.update_autoscaler(min_containers=THREADS)
            wait_for_ready_containers(app, "Echo", 1, THREADS)
            scale_up_16_s = time.perf_counter() - start
            call = lambda: echo.echo.remote("hello")  # noqa: E731
            measure_throughput(call, THREADS, settings.throughput_warmup_s)
            throughput_max1 = measure_throughput(call, THREADS, settings.throughput_s)
            echo.update_autoscaler(min_containers=0)

        # Throughput, one container taking 16 inputs at once.
        concurrent = bench_apps.Echo.with_concurrency(max_inputs=THREADS)()
        concurrent.echo.remote("hello")
        call16 = lambda: concurrent.echo.remote("hello")  # noqa: E731
        measure_throughput(call16, THREADS, settings.throughput_warmup_s)
        throughput_max16 = measure_throughput(call16, THREADS, settings.throughput_s)

    cold = ColdResults(Latency(cold_samples), container_start_to_ready(cluster.log_path.read_text()), node_isolation(cluster))
    return CorralResults(warm, queued, spawned, throughput_max1, scale_up_16_s, throughput_max16, cold)


def measure_cold_starts(bench_apps: Any, settings: Settings) -> list[float]:
    """Cold starts: a new parameter value is a new service with no containers."""
    run_id = uuid.uuid4().hex[:8]
    samples = []
    for i in range(settings.cold_samples):
        time.sleep(settings.cold_pause_s)
        start = time.perf_counter()
        assert bench_apps.Cold(key=f"{run_id}-{i}").echo.remote(i) == i
        samples.append(time.perf_counter() - start)
    return samples


def node_isolation(cluster: CorralUp) -> str:
    import corral
    from corral_protocol.v1 import control_pb2

    token = (cluster.home / "token").read_text().strip()
    client = corral.Client(f"grpc://127.0.0.1:{cluster.port}", token)
    nodes = client.call(client.stub.ListNodes, control_pb2.ListNodesRequest()).nodes
    isolation = nodes[0].inventory.isolation if nodes else None
    if isolation is None or not isolation.mode:
        return "unknown"
    return isolation.mode if isolation.mode != "none" else f"none ({isolation.reason})"


def bench_cold_without_isolation(root: Path, settings: Settings, env: dict[str, str] | None = None, name: str = "plain") -> Latency:
    """The same cold starts against a node that runs plain processes (the sandbox's share), or
    against one with the settings `env` (an isolated node without its warm pool)."""
    import corral

    cluster = CorralUp(root / name, env if env is not None else {corral_env.CORRAL_NODE_ISOLATION: "none"})
    try:
        cluster.wait_ready()
        import bench_apps

        token = (cluster.home / "token").read_text().strip()
        with bench_apps.app.run(client=corral.Client(f"grpc://127.0.0.1:{cluster.port}", token)):
            return Latency(measure_cold_starts(bench_apps, settings))
    finally:
        cluster.stop()


def python_import_floor(samples: int) -> dict[str, float]:
    """Wall time of a bare interpreter, and of one that imports the worker module (a cold start's floor)."""
    out = {}
    for label, code in (("python -c pass", "pass"), ("python -c 'import corral_runtime.worker'", "import corral_runtime.worker")):
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times.append(time.perf_counter() - start)
        out[label] = percentile(times, 50)
    return out


# Report ---------------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms" if seconds < 0.01 else f"{seconds * 1000:.1f} ms"


def grpc_version() -> str:
    import grpc

    return grpc.__version__


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def report(
    echo: EchoResults,
    corral: CorralResults,
    floor: dict[str, float],
    settings: Settings,
    quick: bool,
    load_at_start: float,
) -> tuple[str, dict[str, Any]]:
    rows: list[tuple[str, str, str, str]] = []
    e, c = echo, corral
    rows.append(("warm latency p50", ms(e.latency.p50), ms(c.warm.p50), f"{c.warm.p50 / e.latency.p50:.1f}x"))
    rows.append(("warm latency p99", ms(e.latency.p99), ms(c.warm.p99), f"{c.warm.p99 / e.latency.p99:.1f}x"))
    rows.append(("queued .remote() (retries=1) p50 / p99", "", f"{ms(c.queued.p50)} / {ms(c.queued.p99)}", ""))
    rows.append(("spawn + get (durable) p50 / p99", "", f"{ms(c.spawned.p50)} / {ms(c.spawned.p99)}", ""))
    if e.latency.cpu_per_call and c.warm.cpu_per_call:

        def cpu(latency: Latency, parts: tuple[str, ...]) -> str:
            values = [latency.cpu_per_call[p] * 1e6 for p in parts]
            return f"{sum(values):.0f} us = " + " + ".join(f"{v:.0f}" for v in values)

        echo_cpu = sum(e.latency.cpu_per_call[p] for p in ("client", "server"))
        corral_cpu = sum(c.warm.cpu_per_call.values())
        rows.append(
            (
                "CPU per sequential call (client + server [+ container])",
                cpu(e.latency, ("client", "server")),
                cpu(c.warm, ("client", "server", "containers")),
                f"{corral_cpu / echo_cpu:.1f}x",
            )
        )
    def add_throughput(label: str, t: Throughput) -> None:
        rows.append((label, f"{e.throughput.per_s:,.0f}/s", f"{t.per_s:,.0f}/s", f"{t.per_s / e.throughput.per_s:.3f}x"))
        rows.append(
            (
                "  latency p50 / p99 under that load",
                f"{ms(e.throughput.latency.p50)} / {ms(e.throughput.latency.p99)}",
                f"{ms(t.latency.p50)} / {ms(t.latency.p99)}",
                "",
            )
        )

    if c.throughput_max1 is not None:
        add_throughput(f"throughput, {THREADS} threads, max_inputs=1 ({THREADS} containers)", c.throughput_max1)
    add_throughput(f"throughput, {THREADS} threads, max_inputs={THREADS} (1 container)", c.throughput_max16)
    cold = c.cold.latency
    rows.append((f"cold start median / p90 ({len(cold.samples)} samples)", "", f"{ms(cold.p50)} / {ms(cold.p90)}", ""))
    if c.cold.container_start_to_ready:
        spawn = Latency(c.cold.container_start_to_ready)
        rows.append(("  of which container start -> ready (median / p90)", "", f"{ms(spawn.p50)} / {ms(spawn.p90)}", ""))
    rows.append(("  node's container isolation", "", c.cold.isolation, ""))
    plain = c.cold.without_isolation
    if c.cold.isolation == "runc":
        rows.append(("  node's warm pool (containers started ahead)", "", str(c.cold.warm_pool) if c.cold.warm_pool else "off", ""))
    if plain is not None:
        rows.append(("  same cold starts, plain processes (median / p90)", "", f"{ms(plain.p50)} / {ms(plain.p90)}", ""))
        label = "isolated with the warm pool minus plain processes" if c.cold.warm_pool else "sandbox's share"
        rows.append((f"  {label} (difference of medians)", "", ms(cold.p50 - plain.p50), ""))
    unpooled = c.cold.without_pool
    if unpooled is not None:
        rows.append(("  same cold starts, isolated, no warm pool (median / p90)", "", f"{ms(unpooled.p50)} / {ms(unpooled.p90)}", ""))
        rows.append(("  sandbox's share without the pool (difference of medians)", "", ms(unpooled.p50 - plain.p50) if plain else "", ""))
        rows.append(("  warm pool's saving (difference of medians)", "", ms(unpooled.p50 - cold.p50), ""))
    for label, value in floor.items():
        rows.append((f"  reference: {label}", "", ms(value), ""))

    header = ("", "raw gRPC echo", "Corral", "Corral / echo")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lines = [
        f"Corral call latency benchmark ({'quick' if quick else 'full'}): {dt.datetime.now().isoformat(timespec='seconds')}",
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}, Python {platform.python_version()}, "
        f"grpcio {grpc_version()}; load average at start {load_at_start:.2f}",
        f"settings: {settings.latency_calls} sequential calls after {settings.latency_warmup} warm-up; "
        f"throughput {THREADS} threads for {settings.throughput_s:g} s; {settings.cold_samples} cold starts",
        "",
        "  ".join(h.ljust(w) for h, w in zip(header, widths)),
        "  ".join("-" * w for w in widths),
    ]
    for row in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    ratio = c.warm.p50 / e.latency.p50
    lines += [
        "",
        f"goal: warm p50 <= {WARM_P50_GOAL_RATIO:g}x echo p50: {ratio:.1f}x -> {'PASS' if ratio <= WARM_P50_GOAL_RATIO else 'MISS'}",
        f"goal: trivial cold start < {COLD_START_GOAL_S:g} s: median {cold.p50:.3f} s -> {'PASS' if cold.p50 < COLD_START_GOAL_S else 'MISS'}",
    ]
    if c.cold.isolation == "runc":
        pool = f" (warm pool of {c.cold.warm_pool})" if c.cold.warm_pool else " (no warm pool)"
        lines.append(f"goal: isolated trivial cold start < {ISOLATED_COLD_START_GOAL_S * 1000:.0f} ms{pool}: median {ms(cold.p50)} -> "
                     f"{'PASS' if cold.p50 < ISOLATED_COLD_START_GOAL_S else 'MISS'}")
        if unpooled is not None:
            lines.append(f"      without the warm pool: median {ms(unpooled.p50)} -> {'PASS' if unpooled.p50 < ISOLATED_COLD_START_GOAL_S else 'MISS'}")

    def tp(t: Throughput | None) -> dict[str, float] | None:
        if t is None:
            return None
        return {"calls_per_s": t.per_s, "calls": t.calls, "seconds": t.seconds, "p50_s": t.latency.p50, "p99_s": t.latency.p99}

    data = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "quick": quick,
        "echo": {
            "p50_s": e.latency.p50,
            "p99_s": e.latency.p99,
            "cpu_per_call_s": e.latency.cpu_per_call,
            "throughput": tp(e.throughput),
        },
        "corral": {
            "warm_p50_s": c.warm.p50,
            "warm_p99_s": c.warm.p99,
            "queued_p50_s": c.queued.p50,
            "queued_p99_s": c.queued.p99,
            "spawned_p50_s": c.spawned.p50,
            "spawned_p99_s": c.spawned.p99,
            "warm_cpu_per_call_s": c.warm.cpu_per_call,
            "throughput_max_inputs_1": tp(c.throughput_max1),
            "scale_up_to_16_s": c.scale_up_16_s,
            "throughput_max_inputs_16": tp(c.throughput_max16),
            "cold_start_samples_s": cold.samples,
            "cold_start_median_s": cold.p50,
            "cold_start_p90_s": cold.p90,
            "container_start_to_ready_s": c.cold.container_start_to_ready,
            "isolation": c.cold.isolation,
            "cold_start_without_isolation_median_s": plain.p50 if plain else None,
            "cold_start_without_isolation_samples_s": plain.samples if plain else None,
            "sandbox_share_s": (cold.p50 - plain.p50) if plain else None,
            "warm_pool": c.cold.warm_pool,
            "cold_start_without_pool_median_s": unpooled.p50 if unpooled else None,
            "cold_start_without_pool_samples_s": unpooled.samples if unpooled else None,
        },
        "reference": floor,
        "ratios": {
            "warm_p50": ratio,
            "warm_p99": c.warm.p99 / e.latency.p99,
            "throughput_max_inputs_1": (c.throughput_max1.per_s / e.throughput.per_s) if c.throughput_max1 else None,
            "throughput_max_inputs_16": c.throughput_max16.per_s / e.throughput.per_s,
        },
        "goals": {"warm_p50_le_3x_echo": ratio <= WARM_P50_GOAL_RATIO, "cold_start_lt_1s": cold.p50 < COLD_START_GOAL_S},
    }
    if scale := c.scale_up_16_s:
        lines.insert(-3, f"(pre-scaling Echo from 1 to {THREADS} ready containers took {scale:.1f} s)")
    return "\n".join(lines), data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples; skips the 16-container throughput run")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary CORRAL_HOME and corral up log")
    parser.add_argument("--warm-pool", type=int, default=None, metavar="N",
                        help="the isolated node's warm pool size (default: the node's default); with a pool, the same cold "
                             "starts also run against an isolated node without one")
    parser.add_argument("--echo-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.echo_server:
        serve_echo(args.echo_server)
        return 0
    settings = QUICK if args.quick else FULL
    load_at_start = load_average()
    if load_at_start > 0.5:
        print(
            f"note: the 1-minute load average is {load_at_start:.2f}; other work on this machine skews the figures",
            file=sys.stderr,
        )
    began = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="corral-bench-"))
    pool_size = args.warm_pool if args.warm_pool is not None else int(os.environ.get(corral_env.CORRAL_NODE_WARM_POOL) or
                                                                           corral_env.DEFAULT_WARM_POOL)
    cluster = CorralUp(root, {corral_env.CORRAL_NODE_WARM_POOL: str(pool_size)})
    try:
        cluster.wait_ready()
        echo = bench_echo(settings)
        corral = bench_corral(cluster, settings, args.quick)
        if corral.cold.isolation == "runc":
            cluster.stop()
            corral.cold.warm_pool = pool_size
            corral.cold.without_isolation = bench_cold_without_isolation(root, settings)
            if pool_size:
                corral.cold.without_pool = bench_cold_without_isolation(root, settings, {corral_env.CORRAL_NODE_WARM_POOL: "0"}, "unpooled")
    except BaseException:
        print(f"corral up log: {cluster.log_path}", file=sys.stderr)
        args.keep = True
        raise
    finally:
        cluster.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    floor = python_import_floor(settings.import_samples)
    text, data = report(echo, corral, floor, settings, args.quick, load_at_start)
    print(text)
    print(f"\n(total benchmark time {time.perf_counter() - began:.0f} s)")
    if args.keep:
        print(f"state and corral up log kept in {root}")
    if args.json:
        args.json.write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
