"""Classes that try, from inside a method, what an isolated container must not be able to do."""

from __future__ import annotations

import os
import signal
import time

import corral

app = corral.App("isolation")


def _attempt(action) -> str:  # type: ignore[no-untyped-def]
    """'ok' when `action()` worked, else the error's type (a refusal)."""
    try:
        action()
    except OSError as err:
        return type(err).__name__
    return "ok"


def _environments_mention(value: str) -> list[int]:
    """The pids whose environment this container can read and that hold `value`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if value.encode() in f.read():
                    found.append(int(name))
        except OSError:
            pass
    return found


def _write(path: str) -> None:
    with open(path, "w") as f:
        f.write("written from a container")


@app.cls(secrets=[corral.Secret.from_name("isolation-secret")], scaledown_window=30)
class Prober:
    @corral.method()
    def read_file(self, path: str) -> str:
        return _attempt(lambda: open(path, "rb").read())

    @corral.method()
    def list_dir(self, path: str) -> str:
        return _attempt(lambda: os.listdir(path))

    @corral.method()
    def write_file(self, path: str) -> str:
        return _attempt(lambda: _write(path))

    @corral.method()
    def signal_pid(self, pid: int) -> str:
        return _attempt(lambda: os.kill(pid, signal.SIGTERM))

    @corral.method()
    def visible_pids(self) -> list[int]:
        return sorted(int(name) for name in os.listdir("/proc") if name.isdigit())

    @corral.method()
    def environments_mention(self, value: str) -> list[int]:
        return _environments_mention(value)

    @corral.method()
    def status(self) -> dict:
        """Capabilities, no_new_privs and seccomp mode, from /proc/self/status."""
        fields = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
        return {k: fields.get(k, "").strip() for k in ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp")}

    @corral.method()
    def own_secret(self) -> str:
        return os.environ.get("ISOLATION_SECRET", "")

    @corral.method()
    def identity(self) -> dict:
        return {"pid": os.getpid(), "uid": os.getuid(), "container": os.environ.get("CORRAL_CONTAINER_ID", "")}


@app.cls(scaledown_window=30)
class Neighbour:
    """Another service (no secret): its own container."""

    @corral.method()
    def environments_mention(self, value: str) -> list[int]:
        return _environments_mention(value)

    @corral.method()
    def hold(self, seconds: float) -> str:
        time.sleep(seconds)
        return os.environ.get("CORRAL_CONTAINER_ID", "")


@app.cls(memory=128, scaledown_window=30)
class Hog:
    @corral.method()
    def allocate(self, mib: int) -> int:
        chunks = [bytearray(1024 * 1024) for _ in range(mib)]
        for chunk in chunks:
            chunk[::4096] = b"x" * len(chunk[::4096])  # touch every page
        return len(chunks)


@app.cls(cpu=0.5, scaledown_window=30)
class Spinner:
    @corral.method()
    def spin(self, seconds: float) -> dict:
        """Busy-loop for `seconds` of wall time; the CPU time and wall time it got."""
        wall0, cpu0 = time.monotonic(), time.process_time()
        while time.monotonic() < wall0 + seconds:
            pass
        return {"wall": time.monotonic() - wall0, "cpu": time.process_time() - cpu0}


# A second app for tests that run their own cluster while `app` runs on the session's.
own_cluster_app = corral.App("isolation-own-cluster")


@own_cluster_app.cls()
class Echo:
    @corral.method()
    def container(self) -> str:
        return os.environ.get("CORRAL_CONTAINER_ID", "")


# A third app, for the tests of what a container inherits from its node's environment.
env_app = corral.App("isolation-env")


@env_app.cls(secrets=[corral.Secret.from_name("env-secret")], scaledown_window=30)
class EnvReader:
    @corral.method()
    def environ(self) -> dict:
        return dict(os.environ)
