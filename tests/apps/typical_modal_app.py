"""A typical Modal app, written for Modal; only the import differs (`import corral as modal`).

A function on a cron schedule, a class with a streaming LLM-style endpoint, and a batch job whose
function fans out with `map` to a class.
"""

import time

import corral as modal

app = modal.App("typical")


@app.function(schedule=modal.Cron("0 * * * *"))
def hourly_report():
    print("report at", time.time())


@app.cls(scaledown_window=60)
class LLM:
    model_name: str = modal.parameter(default="tiny")
    temperature: float = modal.parameter(default=0.7)

    @modal.enter()
    def load(self):
        self.vocabulary = ["Hello", ",", " world", "!"]

    @modal.method()
    def generate(self, prompt: str):
        yield from self.vocabulary

    @modal.method()
    def score(self, text: str) -> int:
        return len(text)

    @modal.fastapi_endpoint(method="POST")
    def complete(self, prompt: str):
        from fastapi.responses import StreamingResponse

        return StreamingResponse(self.generate(prompt), media_type="text/plain")


@app.function(timeout=600)
def batch_job(texts: list[str]) -> int:
    return sum(LLM().score.map(texts))


@app.local_entrypoint()
def main():
    print("".join(LLM().generate.remote_gen("hi")))
    print(batch_job.remote(["a", "bb", "ccc"]))
