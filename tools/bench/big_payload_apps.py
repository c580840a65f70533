"""The class tools/bench/big_payload.py calls with a large argument: it returns the argument's
sha256, so the bytes are checked end to end without sending them back."""

import corral

app = corral.App("corral-big-payload-bench")


@app.cls(cpu=(0.01, 8), memory=(64, 8192), scaledown_window=60)
class Sink:
    @corral.method()
    def digest(self, data: bytes) -> str:
        import hashlib

        return hashlib.sha256(data).hexdigest()
