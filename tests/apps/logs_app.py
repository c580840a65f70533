"""Container output for the logs end-to-end tests (issue 14, item 7)."""

import os
import sys

import corral

app = corral.App("logs")


@app.function(secrets=[corral.Secret.from_name("logs-secret")])
def chatty(tag: str) -> str:
    print(f"hello from {tag}")
    print(f"warning from {tag}", file=sys.stderr)
    print(dict(os.environ))  # an accidental print of the environment: its secret must not be stored
    return corral.current_input_id() or ""


@app.function(secrets=[corral.Secret.from_name("logs-secret")])
def leaky() -> None:
    raise ValueError(f"bad token {os.environ['LOGS_TOKEN']}")


@app.local_entrypoint()
def main() -> None:
    print("entrypoint result", chatty.remote("corral-run"))
