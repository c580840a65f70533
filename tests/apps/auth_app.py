"""A class that reports the credentials its container was given."""

import os

import corral


def container_id() -> str:
    """Which container runs this code: every isolated container is pid 1 of its own pid namespace,
    so pids no longer tell containers apart (outside a container: this process's pid)."""
    return os.environ.get("CORRAL_CONTAINER_ID") or str(os.getpid())

app = corral.App("auth-app")


@app.cls(scaledown_window=1)
class AuthIdentity:
    tag: str = corral.parameter(default="a")

    @corral.method()
    def identity(self) -> dict:
        return {
            "container_id": os.environ["CORRAL_CONTAINER_ID"],
            "container_token": os.environ["CORRAL_CONTAINER_TOKEN"],
            "control_url": os.environ["CORRAL_CONTROL_URL"],
            "env": dict(os.environ),
            "pid": container_id(),
        }
