"""Classes that try every way to leak their secret: exceptions holding the whole environment,
prints, a failing @enter hook and a failing web endpoint (tests/e2e/test_secrets.py)."""

import os
import sys

import corral

app = corral.App("secrets-app")

SECRET_NAME = "e2e-leaky"
SECRET_KEY = "LEAKY_TOKEN"


class LeakError(Exception):
    """An exception of the app's own that carries the environment as data."""

    def __init__(self, message: str, env: dict) -> None:
        super().__init__(message, env)
        self.env = env


@app.cls(secrets=[corral.Secret.from_name(SECRET_NAME)], scaledown_window=600)
class Leaky:
    tag: str = corral.parameter(default="a")

    @corral.method()
    def has_secret(self, expected: str) -> bool:
        return os.environ.get(SECRET_KEY) == expected

    @corral.method()
    def leak(self) -> None:
        raise RuntimeError(f"the whole environment: {os.environ}")

    @corral.method()
    def leak_data(self) -> None:
        raise LeakError("environment attached", dict(os.environ))

    @corral.method()
    def print_env(self, marker: str) -> str:
        print(f"{marker} stdout {dict(os.environ)}", flush=True)
        print(f"{marker} stderr {os.environ}", file=sys.stderr, flush=True)
        return marker

    @corral.method()
    @corral.web_endpoint()
    def web_leak(self) -> dict:
        raise RuntimeError(f"web: {dict(os.environ)}")


@app.cls(secrets=[corral.Secret.from_name(SECRET_NAME)])
class LeakyEnter:
    @corral.enter()
    def setup(self) -> None:
        print(f"entering with {dict(os.environ)}", file=sys.stderr, flush=True)
        raise RuntimeError(f"enter: {dict(os.environ)}")

    @corral.method()
    def ping(self) -> str:
        return "pong"


SNAP_SECRET_NAME = "e2e-leaky-snap"


@app.cls(enable_memory_snapshot=True, secrets=[corral.Secret.from_name(SNAP_SECRET_NAME)], scaledown_window=600)
class LeakySnap:
    """Its worker gets its secrets with its identity, after the snapshot point."""

    @corral.enter(snap=True)
    def build(self) -> None:
        self.built = True

    @corral.method()
    def leak(self) -> None:
        print(f"snap stdout {dict(os.environ)}", flush=True)
        raise RuntimeError(f"restored environment: {dict(os.environ)}")
