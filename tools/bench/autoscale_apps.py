"""The class tools/bench/autoscale_wrk.py loads with wrk: a trivial GET endpoint with default
settings (one input per container, no max_containers). `cpu=0.01` lets placement fit any number of
containers on the node, as the issue's measurement did: only the autoscaler decides how many run."""

import corral

app = corral.App("corral-autoscale-bench")


@app.cls(cpu=0.01, scaledown_window=2)
class Hello:
    @corral.method()
    @corral.web_endpoint(method="GET")
    def hello(self) -> dict[str, bool]:
        return {"ok": True}
