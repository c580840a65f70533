"""A class that reports the credentials its container was given."""

import os

import corral

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
            "pid": os.getpid(),
        }
