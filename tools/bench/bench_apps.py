"""Classes the call-latency benchmark runs (tools/bench/call_latency.py).

Both classes reserve a tiny CPU share with a limit above the machine's cores (`cpu=(0.01, 8)`), so
that the benchmark's 16-container throughput run, the cold-start samples and the warm service all
fit on one small embedded node at once (the default reservation, 0.125 core, allows only 16
containers on a 2-core machine) and no container is throttled by a CPU quota.
"""

import corral

app = corral.App("corral-bench")


@app.cls(cpu=(0.01, 8))
class Echo:
    """A trivial method: the warm-path latency and throughput benchmark."""

    @corral.method()
    def echo(self, x):
        return x


@app.cls(cpu=(0.01, 8))
class Cold:
    """Parameterized: every new `key` is a new service at zero containers (a forced cold start)."""

    key: str = corral.parameter()

    @corral.method()
    def echo(self, x):
        return x
