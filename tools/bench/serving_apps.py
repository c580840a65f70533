"""Classes the serving benchmark runs on Corral (tools/bench/serving.py); serving_ray.py has their Ray Serve twins.

The method bodies are serving.py's workload functions, the same ones the Ray deployments call. Every
class reserves a tiny CPU share with a limit above the machine's cores (`cpu=(0.01, 8)`), so that all
of the benchmark's containers fit on one 2-core node at once and none is throttled by a CPU quota.
"""

from serving import BURST_MAX_CONTAINERS, HTTP_CALLERS, echo_json, make_weights, predict_many, predict_one, sleep_then_return

import corral

app = corral.App("corral-serving-bench")


@app.cls(cpu=(0.01, 8))
class Echo:
    """A trivial method: (a) warm latency on the default class, (b) throughput via `with_concurrency`."""

    @corral.method()
    def echo(self, x):
        return x


@app.cls(cpu=(0.01, 8), max_containers=1)
class Predictor:
    """(c) unbatched: one input vector per call."""

    @corral.enter()
    def load(self):
        self.weights = make_weights()

    @corral.method()
    def predict(self, x):
        return predict_one(self.weights, x)


@app.cls(cpu=(0.01, 8), max_containers=1)
class BatchedPredictor:
    """(c) batched, used as `BatchedPredictor.with_batching(max_batch_size=32, wait_ms=5)`: the method
    receives a list of input vectors and returns one result per input."""

    @corral.enter()
    def load(self):
        self.weights = make_weights()

    @corral.method()
    def predict(self, xs):
        return predict_many(self.weights, xs)


@app.cls(cpu=(0.01, 8), min_containers=0, max_containers=BURST_MAX_CONTAINERS)
class Sleeper:
    """(d) a 100 ms method; every new `key` is a new service at zero containers."""

    key: str = corral.parameter()

    @corral.method()
    def sleep(self, x):
        return sleep_then_return(x)


@app.cls(cpu=(0.01, 8), max_containers=1)
@corral.concurrent(max_inputs=HTTP_CALLERS)
class WebEcho:
    """(e) a trivial GET endpoint through the control plane's HTTP gateway: `GET .../WebEcho-echo?x=...`
    answers {"x": x}. One container admitting HTTP_CALLERS requests at once (Ray: max_ongoing_requests)."""

    @corral.method()
    @corral.web_endpoint(method="GET")
    def echo(self, x: str) -> dict[str, str]:
        return echo_json(x)
