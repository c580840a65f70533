"""The Ray Serve side of the serving benchmark (tools/bench/serving.py), run with the benchmark's Ray venv.

    .bench-cache/ray-venv/bin/python tools/bench/serving_ray.py --out ray.json [--quick] [--only a,b,c_unbatched,c_batched,d,e]

serving.py makes that venv and runs this script; it can also be run alone as above. It starts a local
Ray cluster (`ray.init(num_cpus=2, include_dashboard=False)`, Serve with HTTP proxies disabled: (a)-(d)
call through deployment handles), measures what serving.py measures for Corral with the same
workload functions and measuring code (both imported from serving.py), and writes the figures as
JSON to --out (and prints them). The deployments' settings, and why, are in serving.py's docstring.

(e) is measured by serving.py's process, with the HTTP load generator the Corral side uses: after the
other measures this script restarts Serve with its HTTP proxy on a free port of 127.0.0.1, deploys
`WebEcho` at route /echo, prints `SERVING_HTTP_URL <url>` once the route answers, and waits for a line
(or end of file) on stdin before it deletes the application and shuts Ray down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from call_latency import Throughput, free_port, load_average, measure_latency
from serving import (
    BATCH_CALLERS,
    BATCH_SIZE,
    BATCH_WAIT_MS,
    BURST_MAX_CONTAINERS,
    FULL,
    HTTP_CALLERS,
    HTTP_READY,
    LOAD_CALLERS,
    QUICK,
    RAY_BATCHED_MAX_ONGOING,
    THREAD_ENV,
    BurstResult,
    Settings,
    burst,
    burst_summary,
    check_predictions,
    echo_json,
    guarded,
    latency_summary,
    make_inputs,
    make_weights,
    measure_load,
    predict_many,
    predict_one,
    progress,
    sleep_then_return,
    throughput_summary,
)

HERE = Path(__file__).resolve().parent
KEYS = ("a", "b", "c_unbatched", "c_batched", "d", "e")

# Read by Ray Serve when it is imported, so set before `import ray`; inherited by the raylet and so by
# every replica. The metric pushes are what a burst from zero waits on (10 s by default).
RAY_ENV = {
    **THREAD_ENV,
    "PYTHONPATH": str(HERE),  # replicas import serving.py's workload functions
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.1",
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.1",
}
os.environ.update(RAY_ENV)

from ray import serve  # noqa: E402 - after the environment above

NO_CPU = {"num_cpus": 0}
QUIET = {"enable_access_log": False, "log_level": "WARNING"}


@serve.deployment(ray_actor_options=NO_CPU, logging_config=QUIET)
class Echo:
    def echo(self, x):
        return x


@serve.deployment(ray_actor_options=NO_CPU, logging_config=QUIET, max_ongoing_requests=1)
class Predictor:
    def __init__(self):
        self.weights = make_weights()

    def predict(self, x):
        return predict_one(self.weights, x)


@serve.deployment(ray_actor_options=NO_CPU, logging_config=QUIET, max_ongoing_requests=RAY_BATCHED_MAX_ONGOING)
class BatchedPredictor:
    def __init__(self):
        self.weights = make_weights()

    @serve.batch(max_batch_size=BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_MS / 1000)
    async def predict(self, xs):
        return predict_many(self.weights, xs)


@serve.deployment(
    ray_actor_options=NO_CPU,
    logging_config=QUIET,
    max_ongoing_requests=1,
    autoscaling_config={
        "min_replicas": 0,
        "initial_replicas": 0,
        "max_replicas": BURST_MAX_CONTAINERS,
        "target_ongoing_requests": 1,
        "upscale_delay_s": 0,
        "metrics_interval_s": 0.1,
        "look_back_period_s": 0.5,
    },
)
class Sleeper:
    def sleep(self, x):
        return sleep_then_return(x)


@serve.deployment(ray_actor_options=NO_CPU, logging_config=QUIET, max_ongoing_requests=HTTP_CALLERS)
class WebEcho:
    """(e) a trivial GET route behind Serve's HTTP proxy: `GET /echo?x=...` answers {"x": x} (a dict
    is answered as JSON). A sync method, so it runs on the replica's thread pool as Corral's does."""

    def __call__(self, request: Any) -> dict[str, str]:
        return echo_json(request.query_params["x"])


def running_replicas(app_name: str, deployment: str) -> int:
    states = serve.status().applications[app_name].deployments[deployment].replica_states
    return int(states.get("RUNNING", 0))


def ray_session_dir() -> Path | None:
    try:
        from ray._private import worker  # no public API names the session directory

        return Path(worker._global_node.get_session_dir_path())
    except Exception:  # noqa: BLE001 - then it is simply kept
        return None


def bench_ray(keys: list[str], settings: Settings) -> dict[str, Any]:
    results: dict[str, Any] = {}
    side = "ray"

    def deploy(deployment: Any, name: str) -> Any:
        return serve.run(deployment.bind(), name=name, route_prefix=None)

    def warm_latency() -> dict[str, Any]:
        handle = deploy(Echo, "a")
        call = lambda: handle.echo.remote("hello").result()  # noqa: E731
        summary = latency_summary(measure_latency(call, settings.latency_calls, settings.latency_warmup))
        serve.delete("a")
        return summary

    def load() -> dict[str, Any]:
        handle = deploy(Echo.options(max_ongoing_requests=LOAD_CALLERS), "b")
        throughput = asyncio.run(measure_load(lambda i: handle.echo.remote("hello"), LOAD_CALLERS, settings))
        serve.delete("b")
        return throughput_summary(throughput)

    xs = make_inputs()

    def predictor_load(deployment: Any, name: str) -> dict[str, Any]:
        handle = deploy(deployment, name)

        async def go() -> Throughput:
            check_predictions([await handle.predict.remote(x) for x in xs[:4]], xs[:4])
            return await measure_load(lambda i: handle.predict.remote(xs[i % len(xs)]), BATCH_CALLERS, settings)

        throughput = asyncio.run(go())
        serve.delete(name)
        return throughput_summary(throughput)

    def burst_from_zero() -> dict[str, Any]:
        samples: list[BurstResult] = []
        for i in range(settings.burst_samples):
            name = f"burst-{uuid.uuid4().hex[:8]}"
            handle = deploy(Sleeper, name)  # returns once the application runs, at zero replicas
            result = asyncio.run(
                burst(handle.sleep.remote, settings.burst_calls, lambda name=name: running_replicas(name, "Sleeper"))
            )
            samples.append(result)
            progress(side, f"d: burst {i + 1}: {result.total_s:.2f} s, {result.most_ready} replicas")
            serve.delete(name)
        return burst_summary(samples)

    measures = {
        "a": ("warm latency, sequential handle calls", warm_latency),
        "b": (f"throughput, {LOAD_CALLERS} async callers, max_ongoing_requests={LOAD_CALLERS}", load),
        "c_unbatched": (f"unbatched predict, {BATCH_CALLERS} callers", lambda: predictor_load(Predictor, "c-unbatched")),
        "c_batched": (
            f"@serve.batch({BATCH_SIZE}, {BATCH_WAIT_MS} ms) predict, {BATCH_CALLERS} callers",
            lambda: predictor_load(BatchedPredictor, "c-batched"),
        ),
        "d": (f"burst of {settings.burst_calls} from zero, max {BURST_MAX_CONTAINERS} replicas", burst_from_zero),
    }
    for key in keys:
        label, measure = measures[key]
        guarded(results, key, side, label, measure)
    return results


def serve_http(settings: Settings) -> dict[str, Any]:
    """(e): Serve with its HTTP proxy (started here; the caller has shut down any earlier Serve
    instance) and WebEcho at /echo; serving.py drives the load, then writes a line on our stdin."""
    results: dict[str, Any] = {}

    def serve_and_wait() -> dict[str, Any]:
        port = free_port()
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port}, logging_config=QUIET)
        serve.run(WebEcho.bind(), name="e", route_prefix="/echo")
        url = f"http://127.0.0.1:{port}/echo"
        deadline = time.monotonic() + 120
        while True:  # the proxy learns the route a moment after serve.run returns
            try:
                with urllib.request.urlopen(f"{url}?x=ready", timeout=10) as response:
                    if json.loads(response.read()) == {"x": "ready"}:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Serve's proxy did not answer {url} within 120 s")
            time.sleep(0.2)
        print(HTTP_READY + url, flush=True)
        sys.stdin.readline()  # serving.py has measured
        serve.delete("e")
        return {"url": url}

    guarded(
        results,
        "e",
        "ray",
        f"HTTP proxy with WebEcho (max_ongoing_requests={HTTP_CALLERS}); serving.py drives the load",
        serve_and_wait,
    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep-logs", action="store_true", help="keep Ray's session directory (logs) even after a good run")
    parser.add_argument("--only", default=",".join(KEYS), help=f"some of {','.join(KEYS)}")
    args = parser.parse_args(argv)
    keys = [k for k in KEYS if k in {s.strip() for s in args.only.split(",")}]
    settings = QUICK if args.quick else FULL

    import grpc
    import numpy
    import ray

    data: dict[str, Any] = {
        "versions": {
            "ray": ray.__version__,
            "numpy": numpy.__version__,
            "grpcio": grpc.__version__,
            "python": sys.version.split()[0],
        },
        "load_average_at_start": load_average(),
    }
    progress("ray", f"starting Ray {ray.__version__} (num_cpus=2, no dashboard) and Serve (no HTTP proxy)")
    began = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 1024 * 1024)
    try:
        handle_keys = [k for k in keys if k != "e"]
        if handle_keys:
            serve.start(proxy_location="Disabled", logging_config=QUIET)
            data["start_s"] = time.perf_counter() - began
            data.update(bench_ray(handle_keys, settings))
        if "e" in keys:
            if handle_keys:
                serve.shutdown()  # (e) needs the HTTP proxy, which (a)-(d) run without
            data.update(serve_http(settings))
    except Exception as exc:  # noqa: BLE001 - the parent reports it
        data["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        session_dir = ray_session_dir()
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
        if session_dir is not None:
            if args.keep_logs or "error" in data:
                progress("ray", f"Ray's logs: {session_dir}")
            else:
                shutil.rmtree(session_dir, ignore_errors=True)  # logs of a run that went well; they pile up in /tmp/ray
    text = json.dumps(data, indent=2)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
