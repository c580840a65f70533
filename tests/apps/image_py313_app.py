"""A class whose image is the trixie base with Python 3.13, defined by a client on another Python:
the corral worker (installed from the node's wheels, grpcio and protobuf from their cp313 wheels)
runs it there."""

import sys

import corral

app = corral.App("images-py313")


@app.cls(image=corral.Image.debian_slim(python_version="3.13"), scaledown_window=30)
class OnPython313:
    @corral.method()
    def version(self) -> list[int]:
        return list(sys.version_info[:2])

    @corral.method()
    def executable(self) -> str:
        return sys.executable
