"""Serving: Corral against Ray Serve on the same machine, in the same run, every figure with its ratio.

    .venv/bin/python tools/bench/serving.py                 # full run (a few minutes on 2 cores)
    .venv/bin/python tools/bench/serving.py --quick         # smoke run: smaller counts
    .venv/bin/python tools/bench/serving.py --skip-ray      # Corral only; ratios shown as n/a
    .venv/bin/python tools/bench/serving.py --only a,c --json out.json
    .venv/bin/python tools/bench/serving.py --setup-only    # install the Ray venv (and numpy), then exit

Ray is not a project dependency. On first use the benchmark makes its own virtualenv,
`.bench-cache/ray-venv` at the repository root, installs `ray[serve]` and numpy there (pinned below),
and runs the Ray side as a subprocess with that venv's python (`serving_ray.py`), which writes its
figures as JSON. numpy for the Corral side goes into `.bench-cache/corral-numpy-<version>` (on
PYTHONPATH for this process, `corral up` and its containers) when the project venv lacks it, so the
project venv is never changed. The Ray side runs first and has shut Ray down before the Corral side
starts `corral up --port P` with a temporary CORRAL_HOME (as tools/bench/call_latency.py does), so the
two never compete for the 2 cores.

What it measures (the project's goals are in brackets; Corral / Ray is the ratio printed):

a. Warm call latency, p50/p99 of a trivial method (`def echo(self, x): return x`), sequential calls
   from a sync caller: Corral `obj.echo.remote("hello")` on the default class (1 container,
   max_inputs=1), Ray `handle.echo.remote("hello").result()` on a deployment with 1 replica and
   default settings. [Corral p50 <= 1/5 of Ray's]
b. Throughput with 64 concurrent callers: 64 asyncio tasks in this one process, each calling back to
   back for a fixed time after a warm-up: Corral `await obj.echo.remote.aio(x)` on
   `Echo.with_concurrency(max_inputs=64).with_options(max_containers=1)`, Ray
   `await handle.echo.remote(x)` on 1 replica with `max_ongoing_requests=64`. [Corral >= 5x Ray]
c. Batching a vectorised numpy method, 256 concurrent asyncio callers for a fixed time: weights W
   float32 (4096, 1024) built once per container/replica; unbatched `float((W @ x).sum())` for x a
   1024-float32 vector; batched, the method takes a list of vectors, stacks them and does one matmul.
   W is 16 MB: it fits a 32 MB L3 cache, so on this machine one call is ~0.4-0.5 ms of compute and
   doing 32 at once gains only ~2-3x from compute alone; the run measures and prints that ceiling
   (`compute_ceiling`: the bodies alone in this process). One container/replica each (Corral `max_containers=1`;
   unbatched at max_inputs=1 against Ray at `max_ongoing_requests=1`). Corral batched is
   `BatchedPredictor.with_batching(max_batch_size=32, wait_ms=5).with_concurrency(max_inputs=256)`
   (its container admits all 256 callers' inputs: one batch runs while the next fills); Ray batched
   is `@serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)` with `max_ongoing_requests=256`:
   the same admission on both sides. Ray's unbatched figure
   (`max_ongoing_requests=1`) is printed for reference. [Corral batched >= 10x Corral unbatched, and
   ahead of Ray's batched]
d. Burst from zero: 200 concurrent calls of a method that sleeps 100 ms, on a service at zero
   containers/replicas with at most 8, one input at a time each; time from the first call to the last
   answer. Corral: a new parameter value of `Sleeper` (a new service, hence zero containers) with
   `min_containers=0, max_containers=8`, bound with `update_autoscaler` before the clock starts.
   Ray: a new application with `autoscaling_config` min_replicas=0, initial_replicas=0,
   max_replicas=8, target_ongoing_requests=1, `max_ongoing_requests=1`, and, so that Ray is not
   handicapped by its defaults (a 30 s upscale delay, 10 s metric pushes), `upscale_delay_s=0`,
   `metrics_interval_s=0.1`, `look_back_period_s=0.5` and
   RAY_SERVE_{HANDLE,REPLICA}_AUTOSCALING_METRIC_PUSH_INTERVAL_S=0.1. [Corral < Ray]
e. HTTP: a trivial GET endpoint answering {"x": x} for a query parameter x, Corral's web gateway
   (`WebEcho`, `@corral.web_endpoint(method="GET")`, `@corral.concurrent(max_inputs=64)`,
   `max_containers=1`) against Ray Serve's HTTP proxy (a deployment at route /echo, 1 replica,
   `max_ongoing_requests=64`; serving_ray.py restarts Serve with its proxy on a free port after (a)-(d)
   and waits while this process measures). One load generator for both (`measure_http`, httpx, run in
   this process): p50/p99 of sequential requests over one keep-alive client (counts of (a)), then 64
   asyncio tasks sharing one AsyncClient for the time of (b). Its CPU per request is printed: with 64
   connections httpx costs several ms per request on this machine, so it bounds both throughputs.
   [Corral p50 < Ray, Corral requests/s > Ray]

Fairness: the method bodies are the same functions (defined in this file, imported by
serving_apps.py and serving_ray.py); the same machine, callers, concurrency limits and measuring code
(`closed_loop`, `burst` below, `measure_latency` from call_latency.py) on both sides. Ray runs as a
local cluster started with `ray.init(num_cpus=2, include_dashboard=False)`, HTTP proxies disabled
(handles only), deployments with `num_cpus=0` so that all fit (Corral classes reserve cpu=0.01 for the
same reason; neither is a limit), and Serve's per-request access log off (Corral keeps none).
BLAS runs one thread per process on both sides (OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=1 in the
containers' and the replicas' environment). Ray's sync methods run on its replica thread pool (its
default); `@serve.batch` requires an `async def`, which calls the same batched body.

Timings are not asserted anywhere; the goals are printed as PASS/FAIL lines.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from call_latency import CorralUp, Latency, Throughput, grpc_version, load_average, measure_latency, ms

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = REPO / ".bench-cache"
RAY_VENV = CACHE / "ray-venv"
RAY_VERSION = "2.60.0"
NUMPY_VERSION = "2.4.6"
RAY_REQUIREMENTS = (f"ray[serve]=={RAY_VERSION}", f"numpy=={NUMPY_VERSION}")
CORRAL_NUMPY_DIR = CACHE / f"corral-numpy-{NUMPY_VERSION}"
# Bumped when the way the Ray venv is installed changes, so that caches made the old way are redone.
RAY_VENV_LAYOUT = "isolated-env 1"
# The Ray side never sees the Corral side's Python environment: its PYTHONPATH (which holds
# corral-numpy when the project venv lacks numpy: pip then skipped numpy in the Ray venv, and Serve's
# controller, started by the raylet without it, died with "No module named 'numpy'"), nor pip settings
# that change what gets installed where. pip settings that say where packages come from are kept.
SCRUBBED_PYTHON_ENV = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "PYTHONEXECUTABLE",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
)
KEPT_PIP_ENV = (
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "PIP_NO_INDEX",
    "PIP_TRUSTED_HOST",
    "PIP_CERT",
    "PIP_CLIENT_CERT",
    "PIP_PROXY",
    "PIP_DEFAULT_TIMEOUT",
    "PIP_TIMEOUT",
    "PIP_RETRIES",
    "PIP_CONFIG_FILE",
)
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# Containers inherit only an allow-list of their node's environment: the thread counts are set here,
# when the workload's module is imported (in a Corral container too), before numpy's first import.
for _name, _value in THREAD_ENV.items():
    os.environ.setdefault(_name, _value)

MEASURES = ("a", "b", "c", "d", "e")
LOAD_CALLERS = 64  # (b)
HTTP_CALLERS = 64  # (e): concurrent requests, and the concurrency limit of the container/replica
BATCH_CALLERS = 256  # (c)
BATCH_SIZE = 32
BATCH_WAIT_MS = 5
RAY_BATCHED_MAX_ONGOING = BATCH_CALLERS  # every caller admitted: batches form at the replica, not in the router
BURST_MAX_CONTAINERS = 8  # (d)
SLEEP_S = 0.1
WEIGHTS_SHAPE = (4096, 1024)
INPUT_POOL = 64  # distinct input vectors the callers cycle through
READY_POLL_S = 0.25  # (d): how often ready containers/replicas are counted during a burst

GOAL_A_MAX_RATIO = 0.2  # Corral p50 / Ray p50
GOAL_B_MIN_RATIO = 5.0  # Corral / Ray calls per second
GOAL_C_MIN_SPEEDUP = 10.0  # Corral batched / Corral unbatched
GOAL_C_MIN_RATIO = 1.0  # Corral batched / Ray batched, strictly above
GOAL_D_MAX_RATIO = 1.0  # Corral burst time / Ray burst time, strictly below
GOAL_E_MAX_P50_RATIO = 1.0  # Corral HTTP p50 / Ray HTTP p50, strictly below
GOAL_E_MIN_RATIO = 1.0  # Corral / Ray HTTP requests per second, strictly above


@dataclass(frozen=True)
class Settings:
    latency_calls: int
    latency_warmup: int
    load_s: float
    load_warmup_s: float
    burst_calls: int
    burst_samples: int


FULL = Settings(latency_calls=2000, latency_warmup=200, load_s=5.0, load_warmup_s=1.0, burst_calls=200, burst_samples=2)
QUICK = Settings(latency_calls=300, latency_warmup=50, load_s=1.5, load_warmup_s=0.5, burst_calls=100, burst_samples=1)


# The workload: the method bodies both sides run ----------------------------------------------------


def make_weights() -> Any:
    import numpy as np

    return np.random.default_rng(0).standard_normal(WEIGHTS_SHAPE, dtype=np.float32)


def make_inputs(count: int = INPUT_POOL) -> list[Any]:
    import numpy as np

    rows = np.random.default_rng(1).standard_normal((count, WEIGHTS_SHAPE[1]), dtype=np.float32)
    return [row.copy() for row in rows]


def predict_one(weights: Any, x: Any) -> float:
    return float((weights @ x).sum())


def predict_many(weights: Any, xs: list[Any]) -> list[float]:
    if not isinstance(xs, list):
        raise TypeError(f"the batched method got one {type(xs).__name__}, not a list of inputs: dynamic batching is not active")
    import numpy as np

    return (weights @ np.stack(xs, axis=1)).sum(axis=0).tolist()


def sleep_then_return(x: Any) -> Any:
    time.sleep(SLEEP_S)
    return x


def echo_json(x: str) -> dict[str, str]:
    """(e)'s GET endpoint: the query parameter x, answered as JSON."""
    return {"x": x}


# Measuring (shared with serving_ray.py) ------------------------------------------------------------


def progress(side: str, text: str) -> None:
    print(f"[{side}] {text}", file=sys.stderr, flush=True)


async def closed_loop(call: Callable[[int], Awaitable[Any]], callers: int, seconds: float) -> Throughput:
    """`callers` asyncio tasks each await `call(index)` back to back for `seconds`; calls finished /
    time until the last one returned."""
    clock = time.perf_counter
    per_caller: list[list[float]] = [[] for _ in range(callers)]
    start = clock()
    deadline = start + seconds

    async def caller(index: int) -> float:
        samples = per_caller[index]
        while clock() < deadline:
            began = clock()
            await call(index)
            samples.append(clock() - began)
        return clock()

    ends = await asyncio.wait_for(asyncio.gather(*(caller(i) for i in range(callers))), seconds + 300)
    samples = [s for caller_samples in per_caller for s in caller_samples]
    return Throughput(len(samples), max(ends) - start, Latency(samples))


async def measure_load(call: Callable[[int], Awaitable[Any]], callers: int, settings: Settings) -> Throughput:
    await call(0)  # a container/replica is up before the warm-up starts
    await closed_loop(call, callers, settings.load_warmup_s)
    return await closed_loop(call, callers, settings.load_s)


@dataclass
class BurstResult:
    total_s: float  # from the first call to the last answer
    answered: Latency  # each call's time from the start of the burst to its answer
    ready: list[tuple[float, int]]  # (seconds into the burst, ready containers/replicas), polled

    def first_time(self, at_least: int) -> float | None:
        return next((t for t, count in self.ready if count >= at_least), None)

    @property
    def most_ready(self) -> int:
        return max((count for _, count in self.ready), default=0)


async def burst(
    call: Callable[[int], Awaitable[Any]], calls: int, ready_count: Callable[[], int], timeout: float = 300
) -> BurstResult:
    """`calls` concurrent calls `call(i)`, each expected to return i. Meanwhile a thread polls
    `ready_count()` (containers/replicas ready to serve) every READY_POLL_S."""
    clock = time.perf_counter
    ready: list[tuple[float, int]] = []
    stop = threading.Event()
    start = clock()

    def poll() -> None:
        while not stop.is_set():
            try:
                count = ready_count()
            except Exception:  # noqa: BLE001 - a missed sample only
                pass
            else:
                ready.append((clock() - start, count))
            stop.wait(READY_POLL_S)

    async def one(index: int) -> float:
        result = await call(index)
        if result != index:
            raise AssertionError(f"call {index} returned {result!r}")
        return clock() - start

    poller = threading.Thread(target=poll, name="ready-poller", daemon=True)
    poller.start()
    try:
        answered = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(calls))), timeout)
    finally:
        stop.set()
        await asyncio.to_thread(poller.join)
    return BurstResult(max(answered), Latency(list(answered)), ready)


def _check_echo(response: Any, x: str) -> None:
    if response.status_code != 200 or response.json() != {"x": x}:
        raise AssertionError(f"GET {response.url} answered {response.status_code}: {response.text[:200]!r}")


def measure_http(url: str, settings: Settings) -> dict[str, Any]:
    """(e), the one HTTP load generator for both sides, run in serving.py's process against Corral's
    gateway and Ray Serve's proxy alike: `GET url?x=...`, each answer checked to be {"x": x}.
    Latency: sequential requests over one keep-alive httpx.Client (as (a)). Throughput: HTTP_CALLERS
    asyncio tasks sharing one httpx.AsyncClient (a pool of up to HTTP_CALLERS keep-alive connections),
    each requesting back to back (`measure_load`, as (b)). Also records this process's CPU time per
    request (the generator's own cost, the same for both sides)."""
    import httpx

    with httpx.Client(timeout=60) as client:

        def call() -> None:
            _check_echo(client.get(url, params={"x": "hello"}), "hello")

        cpu = time.process_time()
        latency = measure_latency(call, settings.latency_calls, settings.latency_warmup)
        latency_cpu = (time.process_time() - cpu) / (settings.latency_calls + settings.latency_warmup)

    requests = 0

    async def load() -> Throughput:
        limits = httpx.Limits(max_connections=HTTP_CALLERS, max_keepalive_connections=HTTP_CALLERS)
        async with httpx.AsyncClient(timeout=60, limits=limits) as aclient:

            async def call(index: int) -> None:
                nonlocal requests
                x = str(index)
                _check_echo(await aclient.get(url, params={"x": x}), x)
                requests += 1

            await call(0)
            await closed_loop(call, HTTP_CALLERS, settings.load_warmup_s)  # opens the connections
            return await closed_loop(call, HTTP_CALLERS, settings.load_s)

    cpu = time.process_time()
    throughput = asyncio.run(load())
    return {
        "url": url,
        **latency_summary(latency),
        "load_calls": throughput.calls,
        "load_seconds": throughput.seconds,
        "calls_per_s": throughput.per_s,
        "load_p50_s": throughput.latency.p50,
        "load_p99_s": throughput.latency.p99,
        "client_cpu_per_call_s": latency_cpu,
        "client_cpu_per_load_call_s": (time.process_time() - cpu) / max(1, requests),  # warm-up included
    }


def check_predictions(results: list[float], xs: list[Any]) -> None:
    """Both sides must compute the same thing: compare against this process's own arithmetic."""
    weights = make_weights()
    for got, x in zip(results, xs):
        want = predict_one(weights, x)
        if abs(got - want) > 1e-3 * max(1.0, abs(want)):
            raise AssertionError(f"prediction {got!r} differs from the local {want!r}")


def compute_ceiling(seconds: float = 0.5) -> dict[str, float]:
    """(c)'s method bodies alone in this process (no serving at all): calls/s one input at a time and
    BATCH_SIZE at a time. Their ratio bounds what batching can gain from compute on this machine."""
    weights, xs = make_weights(), make_inputs(BATCH_SIZE)

    def rate(run: Callable[[], Any], inputs: int) -> float:
        run()
        count, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            run()
            count += 1
        return count * inputs / elapsed

    one = rate(lambda: predict_one(weights, xs[0]), 1)
    batched = rate(lambda: predict_many(weights, xs), BATCH_SIZE)
    return {"unbatched_per_s": one, "batched_per_s": batched, "ratio": batched / one}


def latency_summary(latency: Latency) -> dict[str, Any]:
    return {"calls": len(latency.samples), "p50_s": latency.p50, "p99_s": latency.p99}


def throughput_summary(t: Throughput) -> dict[str, Any]:
    return {"calls_per_s": t.per_s, "calls": t.calls, "seconds": t.seconds, "p50_s": t.latency.p50, "p99_s": t.latency.p99}


def burst_summary(samples: list[BurstResult]) -> dict[str, Any]:
    def median(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    return {
        "calls": len(samples[0].answered.samples),
        "total_s": statistics.median(b.total_s for b in samples),
        "samples_total_s": [b.total_s for b in samples],
        "p50_answered_s": statistics.median(b.answered.p50 for b in samples),
        "first_ready_s": median([b.first_time(1) for b in samples]),
        "most_ready": [b.most_ready for b in samples],
        "most_ready_s": median([b.first_time(b.most_ready) if b.most_ready else None for b in samples]),
        "ready_timeline": [b.ready for b in samples],
    }


def guarded(results: dict[str, Any], key: str, side: str, label: str, measure: Callable[[], dict[str, Any]]) -> None:
    """Run one measure; a failure is recorded as its result and the run goes on."""
    progress(side, f"{key}: {label}")
    began = time.perf_counter()
    try:
        results[key] = measure()
    except Exception as exc:  # noqa: BLE001 - reported in the table
        results[key] = {"error": f"{type(exc).__name__}: {exc}".strip()[:500]}
        progress(side, f"{key} failed: {results[key]['error']}")
    else:
        progress(side, f"{key} done in {time.perf_counter() - began:.1f} s")


def measure_keys(only: set[str]) -> list[str]:
    keys = []
    for measure in MEASURES:
        if measure in only:
            keys += ["c_unbatched", "c_batched"] if measure == "c" else [measure]
    return keys


# Environments ---------------------------------------------------------------------------------------


def ray_side_env() -> dict[str, str]:
    """The environment of every Ray-side process (venv creation, pip, serving_ray.py and, through it,
    Ray's own processes): this process's, less its Python and pip settings, with the Ray venv first."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in SCRUBBED_PYTHON_ENV and not (key.startswith("PIP_") and key not in KEPT_PIP_ENV)
    }
    env["PYTHONNOUSERSITE"] = "1"
    env["VIRTUAL_ENV"] = str(RAY_VENV)
    env["PATH"] = os.pathsep.join(filter(None, [str(RAY_VENV / "bin"), env.get("PATH")]))
    return env


# Run by the Ray venv's python: numpy and Ray must come from the venv itself.
RAY_VENV_CHECK = (
    "import sys, numpy, ray, ray.serve\n"
    "outside = [m.__file__ for m in (numpy, ray) if not m.__file__.startswith(sys.prefix)]\n"
    "sys.exit(f'imported from outside the Ray venv: {outside}' if outside else 0)\n"
)


def ensure_ray_venv() -> Path | None:
    """The Ray virtualenv's python, installing it on first use; None (after saying why) when that fails."""
    python = RAY_VENV / "bin" / "python"
    marker = RAY_VENV / ".bench-requirements"
    wanted = "\n".join([*RAY_REQUIREMENTS, RAY_VENV_LAYOUT])
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    progress("setup", f"installing {' '.join(RAY_REQUIREMENTS)} into {RAY_VENV.relative_to(REPO)} (first use; a few minutes)")
    env = ray_side_env()
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-I", "-m", "venv", str(RAY_VENV)], check=True, stdout=sys.stderr, env=env)
        # The venv's own pip, isolated (-I: no PYTHONPATH, no user site) so that nothing outside the
        # venv can count as "already installed".
        subprocess.run(
            [
                str(python),
                "-I",
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--progress-bar",
                "off",
                *RAY_REQUIREMENTS,
            ],
            check=True,
            stdout=sys.stderr,
            timeout=1800,
            env=env,
        )
        subprocess.run([str(python), "-I", "-c", RAY_VENV_CHECK], check=True, stdout=sys.stderr, env=env)
    except (OSError, subprocess.SubprocessError) as exc:
        print(
            f"\nINSTALLING RAY FAILED ({exc}); going on without Ray, as with --skip-ray: Ray figures and ratios are n/a.\n",
            file=sys.stderr,
        )
        return None
    marker.write_text(wanted)
    progress("setup", "Ray installed")
    return python


def ensure_corral_numpy() -> str:
    """numpy for this process, `corral up` and its containers, without touching the project venv."""
    try:
        import numpy
    except ImportError:
        pass
    else:
        return str(numpy.__version__)
    if not (CORRAL_NUMPY_DIR / "numpy").is_dir():
        progress("setup", f"installing numpy=={NUMPY_VERSION} into {CORRAL_NUMPY_DIR.relative_to(REPO)} for the Corral side")
        staging = CORRAL_NUMPY_DIR.with_name(CORRAL_NUMPY_DIR.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--progress-bar",
                "off",
                "--target",
                str(staging),
                f"numpy=={NUMPY_VERSION}",
            ],
            check=True,
            stdout=sys.stderr,
        )
        staging.rename(CORRAL_NUMPY_DIR)
    sys.path.insert(0, str(CORRAL_NUMPY_DIR))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CORRAL_NUMPY_DIR), os.environ.get("PYTHONPATH")]))
    import numpy

    return str(numpy.__version__)


# Ray side (a subprocess in the Ray venv) --------------------------------------------------------------


PROBE_TIMEOUT_WARNING = "Failed to get queue length"  # Ray's handle router, when a replica answers its probe late
HTTP_READY = "SERVING_HTTP_URL "  # serving_ray.py's line for (e): Serve's proxy serves the route at this URL


class RayOutputRelay(threading.Thread):
    """Copies the Ray side's output to stderr, counting (per measure) instead of repeating the router's
    queue-length probe timeouts, which flood the output when the machine is busy."""

    def __init__(self, stream: Any) -> None:
        super().__init__(name="ray-output", daemon=True)
        self.stream = stream
        self.probe_timeouts: dict[str, int] = {}
        self.http_url: str | None = None
        self.http_ready = threading.Event()  # set when (e)'s URL is known, or the output has ended

    def run(self) -> None:
        try:
            self._relay()
        finally:
            self.http_ready.set()

    def _relay(self) -> None:
        measure = "setup"
        for line in self.stream:
            if line.startswith(HTTP_READY):
                self.http_url = line[len(HTTP_READY) :].strip()
                self.http_ready.set()
                continue
            if line.startswith("[ray] ") and ": " in line and " " not in line[6 : line.index(": ")]:
                measure = line[6 : line.index(": ")]
            if PROBE_TIMEOUT_WARNING in line:
                self.probe_timeouts[measure] = self.probe_timeouts.get(measure, 0) + 1
                if sum(self.probe_timeouts.values()) == 1:
                    sys.stderr.write(line.rstrip("\n") + "  (further ones are counted, not shown)\n")
                continue
            sys.stderr.write(line)


def run_ray_side(python: Path, keys: list[str], quick: bool, keep_logs: bool, settings: Settings) -> dict[str, Any]:
    """Runs serving_ray.py. For (e) it serves an HTTP route and waits; this process then drives the load
    (`measure_http`, the generator the Corral side uses too) and tells it to go on by a line on stdin."""
    out = Path(tempfile.mkdtemp(prefix="serving-ray-")) / "ray.json"
    command = [str(python), str(HERE / "serving_ray.py"), "--out", str(out), "--only", ",".join(keys)]
    command += ["--quick"] if quick else []
    command += ["--keep-logs"] if keep_logs else []
    process = subprocess.Popen(
        command,
        cwd=str(REPO),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=ray_side_env(),
    )
    relay = RayOutputRelay(process.stdout)
    relay.start()
    http: dict[str, Any] | None = None
    try:
        if "e" in keys:
            relay.http_ready.wait(timeout=1800)
            if relay.http_url:
                http = {}
                guarded(
                    http,
                    "e",
                    "ray",
                    f"HTTP GET through Serve's proxy ({relay.http_url}), sequential, then {HTTP_CALLERS} concurrent",
                    lambda: measure_http(relay.http_url or "", settings),
                )
        assert process.stdin is not None
        try:
            process.stdin.write("done\n")
            process.stdin.close()
        except OSError:
            pass  # it has exited already
        code = process.wait(timeout=1800)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()
        return {"error": "the Ray side ran for more than 30 minutes and was killed"}
    except BaseException:
        os.killpg(process.pid, 9)
        process.wait()
        raise
    finally:
        relay.join(timeout=10)
    try:
        data = json.loads(out.read_text())
    except (OSError, ValueError):
        return {"error": f"the Ray side exited with code {code} and wrote no figures (its output is above)"}
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    if code != 0:
        data.setdefault("error", f"the Ray side exited with code {code}")
    if http is not None:
        data["e"] = http["e"]
    data["router_probe_timeouts"] = relay.probe_timeouts
    return data


# Corral side (this process) ---------------------------------------------------------------------------


def corral_containers(app: Any, class_name: str, key: str, ready_only: bool) -> int:
    """Containers (ready ones, or all) of the service `class_name(key=key)`."""
    from corral_protocol.v1 import control_pb2

    client, app_id = app.running.client, app.running.app_id
    response = client.call(client.stub.ListContainers, control_pb2.ListContainersRequest(app_id=app_id))
    return sum(
        1
        for c in response.containers
        if c.class_name == class_name
        and (c.state == control_pb2.CONTAINER_STATE_READY or not ready_only)
        and any(p.value.string_value == key for p in c.parameters)
    )


def bench_corral(cluster: CorralUp, keys: list[str], settings: Settings) -> dict[str, Any]:
    os.environ["CORRAL_HOME"] = str(cluster.home)
    os.environ.pop("CORRAL_SERVER_URL", None)
    os.environ.pop("CORRAL_TOKEN", None)
    import serving_apps

    app = serving_apps.app
    results: dict[str, Any] = {}
    side = "corral"
    with app.run():
        echo = serving_apps.Echo()
        # Opens this process's channel (and the first container) before anything is timed.
        echo.echo.remote("hello")

        def warm_latency() -> dict[str, Any]:
            call = lambda: echo.echo.remote("hello")  # noqa: E731
            return latency_summary(measure_latency(call, settings.latency_calls, settings.latency_warmup))

        def load() -> dict[str, Any]:
            obj = serving_apps.Echo.with_concurrency(max_inputs=LOAD_CALLERS).with_options(max_containers=1)()
            return throughput_summary(asyncio.run(measure_load(lambda i: obj.echo.remote.aio("hello"), LOAD_CALLERS, settings)))

        xs = make_inputs()

        def predictor_load(obj: Any) -> dict[str, Any]:
            async def go() -> Throughput:
                check_predictions([await obj.predict.remote.aio(x) for x in xs[:4]], xs[:4])
                return await measure_load(lambda i: obj.predict.remote.aio(xs[i % len(xs)]), BATCH_CALLERS, settings)

            return throughput_summary(asyncio.run(go()))

        def unbatched() -> dict[str, Any]:
            return predictor_load(serving_apps.Predictor())

        def batched() -> dict[str, Any]:
            batched_cls = serving_apps.BatchedPredictor.with_batching(max_batch_size=BATCH_SIZE, wait_ms=BATCH_WAIT_MS)
            return predictor_load(batched_cls.with_concurrency(max_inputs=BATCH_CALLERS)())

        def burst_from_zero() -> dict[str, Any]:
            samples = []
            for i in range(settings.burst_samples):
                key = f"{uuid.uuid4().hex[:8]}-{i}"
                obj = serving_apps.Sleeper(key=key)
                obj.update_autoscaler(min_containers=0, max_containers=BURST_MAX_CONTAINERS)  # binds: a service at zero

                async def go(call: Callable[[int], Awaitable[Any]], key: str = key) -> BurstResult:
                    await echo.echo.remote.aio("hello")  # this event loop's channel, not part of the burst
                    return await burst(call, settings.burst_calls, lambda: corral_containers(app, "Sleeper", key, True))

                result = asyncio.run(go(obj.sleep.remote.aio))
                samples.append(result)
                progress(side, f"d: burst {i + 1}: {result.total_s:.2f} s, {result.most_ready} containers")
                # Stop them before going on, as the Ray side deletes its application after each burst.
                obj.update_autoscaler(scaledown_window=0.1)
                deadline = time.monotonic() + 60
                while corral_containers(app, "Sleeper", key, False) and time.monotonic() < deadline:
                    time.sleep(0.2)
            return burst_summary(samples)

        def http() -> dict[str, Any]:
            url = app.running.web_urls["WebEcho.echo"]
            return measure_http(url, settings)

        measures = {
            "a": ("warm latency, sequential .remote()", warm_latency),
            "b": (f"throughput, {LOAD_CALLERS} async callers, max_inputs={LOAD_CALLERS}", load),
            "c_unbatched": (f"unbatched predict, {BATCH_CALLERS} callers", unbatched),
            "c_batched": (f"with_batching({BATCH_SIZE}, {BATCH_WAIT_MS} ms) predict, {BATCH_CALLERS} callers", batched),
            "d": (
                f"burst of {settings.burst_calls} x {SLEEP_S * 1000:.0f} ms from zero, max {BURST_MAX_CONTAINERS}",
                burst_from_zero,
            ),
            "e": (f"HTTP GET through the gateway, sequential, then {HTTP_CALLERS} concurrent", http),
        }
        for key in keys:
            label, measure = measures[key]
            guarded(results, key, side, label, measure)
    return results


# Report ------------------------------------------------------------------------------------------------


def _fig(side: dict[str, Any] | None, key: str, field: str) -> float | None:
    if not side or not isinstance(side.get(key), dict):
        return None
    value = side[key].get(field)
    return value if isinstance(value, (int, float)) else None


def _err(side: dict[str, Any] | None, key: str) -> str | None:
    if side is None:
        return None
    entry = side.get(key)
    return entry.get("error") if isinstance(entry, dict) else None


def verdict(value: float | None, ok: Callable[[float], bool]) -> str:
    return "n/a" if value is None else ("PASS" if ok(value) else "FAIL")


def report(
    ray: dict[str, Any] | None,
    corral: dict[str, Any],
    keys: list[str],
    settings: Settings,
    quick: bool,
    machine: dict[str, Any],
    reference: dict[str, float] | None = None,
) -> tuple[str, dict[str, Any]]:
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    goals: list[tuple[str, str, str]] = []  # (goal, figure, verdict)
    goal_data: dict[str, str] = {}

    def cell(side: dict[str, Any] | None, key: str, field: str, fmt: Callable[[float], str]) -> str:
        if side is None:
            return "n/a"
        if _err(side, key):
            return "error"
        value = _fig(side, key, field)
        return "n/a" if value is None else fmt(value)

    def ratio(key: str, field: str, ray_key: str | None = None) -> float | None:
        mine, theirs = _fig(corral, key, field), _fig(ray, ray_key or key, field)
        return mine / theirs if mine is not None and theirs else None

    def x(value: float | None, digits: int = 2) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}x"

    per_s = lambda v: f"{v:,.0f}/s"  # noqa: E731
    secs = lambda v: f"{v:.2f} s"  # noqa: E731

    def under_load(key: str) -> None:
        rows.append(
            (
                "  latency p50 / p99 under that load",
                f"{cell(ray, key, 'p50_s', ms)} / {cell(ray, key, 'p99_s', ms)}",
                f"{cell(corral, key, 'p50_s', ms)} / {cell(corral, key, 'p99_s', ms)}",
                "",
                "",
                "",
            )
        )

    if "a" in keys:
        r50, r99 = ratio("a", "p50_s"), ratio("a", "p99_s")
        result = verdict(r50, lambda v: v <= GOAL_A_MAX_RATIO)
        rows.append(
            (
                "(a) warm latency p50, sequential calls",
                cell(ray, "a", "p50_s", ms),
                cell(corral, "a", "p50_s", ms),
                x(r50),
                f"<= {GOAL_A_MAX_RATIO:g}x",
                result,
            )
        )
        rows.append(("(a) warm latency p99", cell(ray, "a", "p99_s", ms), cell(corral, "a", "p99_s", ms), x(r99), "", ""))
        goals.append((f"goal a: Corral warm p50 <= 1/{1 / GOAL_A_MAX_RATIO:g} of Ray Serve's", x(r50), result))
        goal_data["a"] = result
    if "b" in keys:
        rb = ratio("b", "calls_per_s")
        result = verdict(rb, lambda v: v >= GOAL_B_MIN_RATIO)
        rows.append(
            (
                f"(b) throughput, {LOAD_CALLERS} async callers, 1 replica/container",
                cell(ray, "b", "calls_per_s", per_s),
                cell(corral, "b", "calls_per_s", per_s),
                x(rb),
                f">= {GOAL_B_MIN_RATIO:g}x",
                result,
            )
        )
        under_load("b")
        goals.append((f"goal b: throughput with {LOAD_CALLERS} callers >= {GOAL_B_MIN_RATIO:g}x Ray Serve", x(rb), result))
        goal_data["b"] = result
    if "c_unbatched" in keys:
        ru = ratio("c_unbatched", "calls_per_s")
        rows.append(
            (
                f"(c) numpy predict unbatched, {BATCH_CALLERS} callers, 1 in flight",
                cell(ray, "c_unbatched", "calls_per_s", per_s),
                cell(corral, "c_unbatched", "calls_per_s", per_s),
                x(ru),
                "",
                "",
            )
        )
        under_load("c_unbatched")
        rc = ratio("c_batched", "calls_per_s")
        ahead = verdict(rc, lambda v: v > GOAL_C_MIN_RATIO)
        rows.append(
            (
                f"(c) batched, max {BATCH_SIZE}, wait {BATCH_WAIT_MS} ms (Ray: @serve.batch)",
                cell(ray, "c_batched", "calls_per_s", per_s),
                cell(corral, "c_batched", "calls_per_s", per_s),
                x(rc),
                f"> {GOAL_C_MIN_RATIO:g}x",
                ahead,
            )
        )
        under_load("c_batched")

        def speedup(side: dict[str, Any] | None) -> float | None:
            batched, unbatched = _fig(side, "c_batched", "calls_per_s"), _fig(side, "c_unbatched", "calls_per_s")
            return batched / unbatched if batched is not None and unbatched else None

        corral_speedup = speedup(corral)
        tenfold = verdict(corral_speedup, lambda v: v >= GOAL_C_MIN_SPEEDUP)
        rows.append(
            (
                "(c) batched / unbatched",
                x(speedup(ray), 1) if ray is not None else "n/a",
                x(corral_speedup, 1),
                "",
                f">= {GOAL_C_MIN_SPEEDUP:g}x (Corral)",
                tenfold,
            )
        )
        goals.append((f"goal c: Corral batched >= {GOAL_C_MIN_SPEEDUP:g}x Corral unbatched", x(corral_speedup, 1), tenfold))
        goals.append(("goal c: Corral batched ahead of Ray @serve.batch", x(rc), ahead))
        goal_data["c_speedup"] = tenfold
        goal_data["c_ahead_of_ray"] = ahead
    if "d" in keys:
        rd = ratio("d", "total_s")
        result = verdict(rd, lambda v: v < GOAL_D_MAX_RATIO)
        samples = settings.burst_samples
        rows.append(
            (
                f"(d) burst {settings.burst_calls} x {SLEEP_S * 1000:.0f} ms from zero, max {BURST_MAX_CONTAINERS}: last answer"
                + (f" (median of {samples})" if samples > 1 else ""),
                cell(ray, "d", "total_s", secs),
                cell(corral, "d", "total_s", secs),
                x(rd),
                f"< {GOAL_D_MAX_RATIO:g}x",
                result,
            )
        )
        rows.append(
            (
                "  half of the calls answered by",
                cell(ray, "d", "p50_answered_s", secs),
                cell(corral, "d", "p50_answered_s", secs),
                x(ratio("d", "p50_answered_s")),
                "",
                "",
            )
        )

        def listing(side: dict[str, Any] | None, field: str, fmt: Callable[[Any], str]) -> str:
            entry = side.get("d") if side else None
            if not isinstance(entry, dict) or field not in entry:
                return "n/a" if side is None else ("error" if _err(side, "d") else "n/a")
            return ", ".join(fmt(v) for v in entry[field])

        def most_ready(side: dict[str, Any] | None) -> str:
            counts = listing(side, "most_ready", str)
            return counts if counts in ("n/a", "error") else f"{counts} @ {cell(side, 'd', 'most_ready_s', secs)}"

        if samples > 1:
            rows.append(
                ("  each burst", listing(ray, "samples_total_s", secs), listing(corral, "samples_total_s", secs), "", "", "")
            )
        rows.append(
            (
                "  first replica / container ready after",
                cell(ray, "d", "first_ready_s", secs),
                cell(corral, "d", "first_ready_s", secs),
                x(ratio("d", "first_ready_s")),
                "",
                "",
            )
        )
        rows.append(
            (
                "  most ready at once, and when first reached",
                most_ready(ray),
                most_ready(corral),
                "",
                "",
                "",
            )
        )
        goals.append(("goal d: burst from zero answered sooner than Ray Serve", x(rd), result))
        goal_data["d"] = result
    if "e" in keys:
        r50, r99, rt = ratio("e", "p50_s"), ratio("e", "p99_s"), ratio("e", "calls_per_s")
        fast = verdict(r50, lambda v: v < GOAL_E_MAX_P50_RATIO)
        more = verdict(rt, lambda v: v > GOAL_E_MIN_RATIO)
        rows.append(
            (
                "(e) HTTP GET latency p50, sequential, 1 keep-alive connection",
                cell(ray, "e", "p50_s", ms),
                cell(corral, "e", "p50_s", ms),
                x(r50),
                f"< {GOAL_E_MAX_P50_RATIO:g}x",
                fast,
            )
        )
        rows.append(("(e) HTTP GET latency p99", cell(ray, "e", "p99_s", ms), cell(corral, "e", "p99_s", ms), x(r99), "", ""))
        rows.append(
            (
                f"(e) HTTP throughput, {HTTP_CALLERS} concurrent requests, 1 replica/container",
                cell(ray, "e", "calls_per_s", per_s),
                cell(corral, "e", "calls_per_s", per_s),
                x(rt),
                f"> {GOAL_E_MIN_RATIO:g}x",
                more,
            )
        )
        rows.append(
            (
                "  latency p50 / p99 under that load",
                f"{cell(ray, 'e', 'load_p50_s', ms)} / {cell(ray, 'e', 'load_p99_s', ms)}",
                f"{cell(corral, 'e', 'load_p50_s', ms)} / {cell(corral, 'e', 'load_p99_s', ms)}",
                "",
                "",
                "",
            )
        )
        us = lambda v: f"{v * 1e6:.0f} us"  # noqa: E731
        rows.append(
            (
                "  load generator CPU per request, sequential / concurrent",
                f"{cell(ray, 'e', 'client_cpu_per_call_s', us)} / {cell(ray, 'e', 'client_cpu_per_load_call_s', us)}",
                f"{cell(corral, 'e', 'client_cpu_per_call_s', us)} / {cell(corral, 'e', 'client_cpu_per_load_call_s', us)}",
                "",
                "",
                "",
            )
        )
        goals.append(("goal e: HTTP GET p50 below Ray Serve's proxy", x(r50), fast))
        goals.append((f"goal e: HTTP throughput with {HTTP_CALLERS} concurrent requests above Ray Serve's", x(rt), more))
        goal_data["e_p50"] = fast
        goal_data["e_throughput"] = more

    if ray and (timeouts := ray.get("router_probe_timeouts")):
        counts = ", ".join(f"{count} in {key}" for key, count in timeouts.items())
        notes.append(
            f"Ray Serve: its handle router logged queue-length probe timeouts ({counts}): a replica answered the router's "
            "probe later than the deadline, so the router backed off before sending the request (a sign of a busy CPU)"
        )
    for name, side in (("Ray Serve", ray), ("Corral", corral)):
        if side is None:
            continue
        if side.get("error"):
            notes.append(f"{name}: {side['error']}")
        for key in keys:
            if error := _err(side, key):
                notes.append(f"{name} {key}: {error}")

    header = ("", "Ray Serve", "Corral", "Corral / Ray", "goal", "result")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        f"Serving benchmark, Corral against Ray Serve ({'quick' if quick else 'full'}): {machine['date']}",
        f"machine: {machine['cores']} cores, {machine['cpu']}, Linux {platform.release()}; Python {machine['python']}; "
        f"ray {machine.get('ray') or 'n/a'}; grpcio {machine['grpcio']} (Corral side), {machine.get('grpcio_ray') or 'n/a'} (Ray side); "
        f"numpy {machine['numpy_corral']} (Corral side), {machine.get('numpy_ray') or 'n/a'} (Ray side)",
        f"load average (1 min): {machine['load_at_start']:.2f} at start, "
        + (f"{machine['load_at_ray']:.2f} when the Ray side started, " if machine.get("load_at_ray") is not None else "")
        + f"{machine['load_at_corral']:.2f} when the Corral side started",
        f"settings: (a) {settings.latency_calls} sequential calls after {settings.latency_warmup}; (b, c) {settings.load_s:g} s "
        f"after {settings.load_warmup_s:g} s warm-up; (d) {settings.burst_samples} burst(s) of {settings.burst_calls} calls; "
        f"(e) as (a) and (b), over HTTP with httpx {machine.get('httpx') or 'n/a'}",
        "",
        "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    if reference:
        notes.append(
            f"(c) reference: the method bodies alone in one process (1 BLAS thread, no serving): {reference['unbatched_per_s']:,.0f}/s "
            f"one input at a time, {reference['batched_per_s']:,.0f}/s {BATCH_SIZE} at a time: compute alone gains "
            f"{reference['ratio']:.1f}x from batching here"
        )
    if notes:
        lines += ["", *(f"note: {n}" for n in notes)]
    lines.append("")
    lines += [f"{goal}: {figure} -> {result}" for goal, figure, result in goals]
    data = {
        "machine": machine,
        "quick": quick,
        "settings": settings.__dict__,
        "ray": ray,
        "corral": corral,
        "compute_reference": reference,
        "goals": goal_data,
    }
    return "\n".join(lines), data


def httpx_version() -> str | None:
    try:
        import httpx
    except ImportError:
        return None
    return str(httpx.__version__)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, for smoke runs")
    parser.add_argument("--skip-ray", action="store_true", help="Corral only; ratios shown as n/a")
    parser.add_argument("--only", default=",".join(MEASURES), help="measures to run, e.g. a,c (default: a,b,c,d,e)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary CORRAL_HOME, the corral up log and Ray's logs")
    parser.add_argument("--setup-only", action="store_true", help="install the Ray venv and the Corral side's numpy, then exit")
    args = parser.parse_args(argv)
    only = {m.strip() for m in args.only.split(",") if m.strip()}
    if unknown := only - set(MEASURES):
        parser.error(f"--only takes some of {','.join(MEASURES)}; unknown: {','.join(sorted(unknown))}")
    keys = measure_keys(only)
    settings = QUICK if args.quick else FULL
    began = time.perf_counter()
    machine: dict[str, Any] = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "grpcio": grpc_version(),
        "httpx": httpx_version(),
        "load_at_start": load_average(),
    }
    if machine["load_at_start"] > 0.5:
        progress(
            "setup",
            f"note: the 1-minute load average is {machine['load_at_start']:.2f}; other work on this machine skews the figures",
        )
    os.environ.update(THREAD_ENV)  # inherited by `corral up` (its containers set them on import, above)
    machine["numpy_corral"] = ensure_corral_numpy()

    if args.setup_only:
        return 0 if args.skip_ray or ensure_ray_venv() is not None else 1

    ray: dict[str, Any] | None = None
    if not args.skip_ray:
        python = ensure_ray_venv()
        if python is not None:
            machine["load_at_ray"] = load_average()
            ray = run_ray_side(python, keys, args.quick, args.keep, settings)
            versions = ray.get("versions", {})
            machine.update({"ray": versions.get("ray"), "numpy_ray": versions.get("numpy"), "grpcio_ray": versions.get("grpcio")})

    reference = compute_ceiling() if "c" in only else None
    machine["load_at_corral"] = load_average()
    root = Path(tempfile.mkdtemp(prefix="corral-serving-"))
    cluster = CorralUp(root)
    try:
        cluster.wait_ready()
        corral = bench_corral(cluster, keys, settings)
    except BaseException:
        print(f"corral up log: {cluster.log_path}", file=sys.stderr)
        args.keep = True
        raise
    finally:
        cluster.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    text, data = report(ray, corral, keys, settings, args.quick, machine, reference)
    print(text)
    print(f"\n(total benchmark time {time.perf_counter() - began:.0f} s)")
    if args.keep:
        print(f"state and corral up log kept in {root}")
    if args.json:
        args.json.write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
