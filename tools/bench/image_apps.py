"""Classes the image benchmark runs (tools/bench/images.py): the same trivial class in a built
image and in the node's own environment. Parameterized, so every new `key` is a new service at zero
containers (a forced cold start)."""

import corral

app = corral.App("corral-bench-images")


@app.cls(cpu=(0.01, 8), image=corral.Image.debian_slim())
class InImage:
    key: str = corral.parameter()

    @corral.method()
    def echo(self, x):
        return x


@app.cls(cpu=(0.01, 8))
class OnNode:
    key: str = corral.parameter()

    @corral.method()
    def echo(self, x):
        return x
