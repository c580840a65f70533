"""Container output for the logs end-to-end tests (issue 14, item 7)."""

import ctypes
import os
import subprocess
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


@app.function(secrets=[corral.Secret.from_name("logs-secret")])
def below_python(tag: str) -> str:
    """Output that bypasses sys.stdout: fd writes, subprocesses, C's printf."""
    os.write(1, f"fd1 from {tag}\n".encode())
    os.write(2, f"fd2 from {tag}\n".encode())
    subprocess.run(["echo", f"echo from {tag}"], check=True)
    subprocess.run(["sh", "-c", f"echo sh-stderr from {tag} >&2"], check=True)
    libc = ctypes.CDLL(None)
    libc.printf(f"printf from {tag}\n".encode())
    libc.fflush(None)  # C's stdout is block-buffered on a pipe
    os.write(1, f"fd token {os.environ['LOGS_TOKEN']}\n".encode())
    return corral.current_input_id() or ""


@app.local_entrypoint()
def main() -> None:
    print("entrypoint result", chatty.remote("corral-run"))
