"""An app with a local entrypoint, for `corral run` and `python deploy_entry.py`."""

import sys

import corral

app = corral.App("e2e-entry")


@app.cls(scaledown_window=1)
class Echo:
    prefix: str = corral.parameter(default=">")

    @corral.method()
    def say(self, text: str) -> str:
        return f"{self.prefix} {text}"


@app.local_entrypoint()
def main(word: str = "default", times: int = 1):
    for _ in range(times):
        print("result:", Echo().say.remote(word))
    print("remote-prefix:", Echo(prefix="#").say.remote(word))


if __name__ == "__main__":
    with app.run():
        main(sys.argv[1] if len(sys.argv) > 1 else "plain")
