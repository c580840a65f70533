"""Classes that fail in every way a call can fail: user exceptions, timeouts, crashes, bad hooks."""

import os
import threading
import time

import corral


def container_id() -> str:
    """Which container runs this code: every isolated container is pid 1 of its own pid namespace,
    so pids no longer tell containers apart (outside a container: this process's pid)."""
    return os.environ.get("CORRAL_CONTAINER_ID") or str(os.getpid())

app = corral.App("errors-app")


class ErrorsCustomError(Exception):
    """An exception class of the app's own; the caller must get this very type back."""


class ErrorsUnpicklableError(Exception):
    """An exception holding a lock: cloudpickle cannot serialize it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class ErrorsGeneratorError(Exception):
    """An exception holding a live generator: cloudpickle cannot serialize it either."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.gen = (i for i in range(3))


def record(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(f"{line} pid={container_id()}\n")


@app.cls(scaledown_window=5)
class ErrorsRaiser:
    @corral.method()
    def raise_builtin(self, text: str) -> None:
        raise ValueError(f"builtin failure: {text}")  # LINE-RAISE-BUILTIN

    @corral.method()
    def raise_custom(self, text: str) -> None:
        raise ErrorsCustomError(f"custom failure: {text}")  # LINE-RAISE-CUSTOM

    @corral.method()
    def raise_unpicklable(self, text: str) -> None:
        raise ErrorsUnpicklableError(f"unpicklable failure: {text}")  # LINE-RAISE-UNPICKLABLE

    @corral.method()
    def raise_generator(self, text: str) -> None:
        raise ErrorsGeneratorError(f"generator failure: {text}")  # LINE-RAISE-GENERATOR

    @corral.method()
    def ok(self, value: int) -> int:
        return value * 2


@app.cls(timeout=1, scaledown_window=5)
class ErrorsSlow:
    @corral.method()
    def sleep(self, seconds: float) -> str:
        time.sleep(seconds)
        return "slept"

    @corral.method()
    def pid(self) -> str:
        return container_id()


@app.cls(scaledown_window=5)
class ErrorsCrasher:
    """Dies with os._exit(1) while it runs an input, unless `marker` exists (then it succeeds)."""

    @corral.method()
    def die_once(self, marker: str) -> str:
        if not os.path.exists(marker):
            with open(marker, "a") as f:
                f.write(f"{container_id()}\n")
            os._exit(1)
        return container_id()

    @corral.method()
    def die_always(self) -> None:
        os._exit(1)

    @corral.method()
    def segfault(self) -> None:
        import ctypes

        ctypes.string_at(0)  # reads address 0: SIGSEGV


@app.cls(scaledown_window=5, retries=1)
class ErrorsRetriedCrasher:
    @corral.method()
    def die_once(self, marker: str) -> str:
        if not os.path.exists(marker):
            with open(marker, "a") as f:
                f.write(f"{container_id()}\n")
            os._exit(1)
        return container_id()


@app.cls(scaledown_window=5)
class ErrorsParams:
    name: str = corral.parameter()
    count: int = corral.parameter(default=1)
    flag: bool = corral.parameter(default=False)

    @corral.method()
    def describe(self) -> str:
        return f"{self.name}:{self.count}:{self.flag}"


@app.cls(scaledown_window=5)
class ErrorsBadEnter:
    events: str = corral.parameter()

    @corral.enter()
    def setup(self):
        record(self.events, "enter")
        raise RuntimeError("enter hook exploded")  # LINE-RAISE-ENTER

    @corral.exit()
    def teardown(self):
        record(self.events, "exit")

    @corral.method()
    def work(self) -> str:
        record(self.events, "work")
        return "worked"


version_app = corral.App("errors-version-app")


@version_app.cls()
class ErrorsVersioned:
    @corral.method()
    def ping(self) -> str:
        return "pong"


class ErrorsTwoArgError(Exception):
    """Pickles, but cannot be re-created from its args (its __init__ takes two): not round-trippable."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"code {code}: {detail}")
        self.code = code


@app.cls(scaledown_window=5)
class ErrorsMore:
    @corral.method()
    def raise_two_arg(self, text: str) -> None:
        raise ErrorsTwoArgError(7, f"two-arg failure: {text}")  # LINE-RAISE-TWO-ARG

    @corral.method()
    async def raise_async(self, text: str) -> None:
        raise KeyError(f"async failure: {text}")  # LINE-RAISE-ASYNC

    @corral.method()
    def raise_chained(self, text: str) -> None:
        try:
            {}["missing"]
        except KeyError as err:
            raise ErrorsCustomError(f"chained failure: {text}") from err  # LINE-RAISE-CHAINED


if not corral.is_local():

    class ErrorsContainerOnlyError(Exception):
        """Exists only inside containers: the caller cannot unpickle it."""


@app.cls(scaledown_window=5, retries=corral.Retries(max_retries=1, initial_delay=0.1))
class ErrorsAlwaysCrasher:
    @corral.method()
    def die_counted(self, marker: str) -> None:
        with open(marker, "a") as f:
            f.write(f"{container_id()}\n")
        os._exit(1)


@app.cls(scaledown_window=5)
class ErrorsOdd:
    @corral.method()
    def raise_container_only(self) -> None:
        raise ErrorsContainerOnlyError("only in the container")  # noqa: F821  # LINE-RAISE-CONTAINER-ONLY

    @corral.method()
    def return_lock(self) -> object:
        return threading.Lock()


@app.cls(timeout=2)
class ErrorsHangingEnter:
    @corral.enter()
    def hang(self):
        import time

        time.sleep(60)

    @corral.method()
    def never(self) -> None:
        return None
