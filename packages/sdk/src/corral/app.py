"""`App`: a named set of functions and classes that runs ephemerally (`app.run()`) or is deployed."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from corral import __version__, _options, schedules
from corral._bundle import build_bundle
from corral._client import Client, default_client
from corral._definition import ClassDefinition
from corral._image_build import build_images
from corral._partial import PartialFunction
from corral.cls import Cls, ResolvedClass
from corral.exception import InvalidError
from corral.function import Function, as_class
from corral.image import Image
from corral.retries import Retries
from corral.secret import Secret
from corral_protocol import APP_HEARTBEAT_INTERVAL_S, env
from corral_protocol.names import name_problem
from corral_protocol.options import merge_options
from corral_protocol.v1 import common_pb2, control_pb2

F = TypeVar("F", bound=Callable[..., Any])

_HEARTBEAT_S = APP_HEARTBEAT_INTERVAL_S
_UPLOAD_CHUNK = 2 * 1024 * 1024


@dataclass
class RunningApp:
    """An app as the server knows it while it runs."""

    client: Client
    app_id: str
    version: int
    class_defs: dict[str, common_pb2.ClassDef]
    web_urls: dict[str, str] = field(default_factory=dict)


class _LocalSource:
    """A class defined in this program with `@app.cls`; resolvable while its app runs."""

    def __init__(self, definition: ClassDefinition, app: App) -> None:
        self.definition = definition
        self.app = app
        self._in_container: ResolvedClass | None = None

    @property
    def name(self) -> str:
        return self.definition.name

    def resolve(self) -> ResolvedClass:
        running = self.app.running
        app_id = os.environ.get(env.CORRAL_APP_ID)
        if running is None and app_id and env.CORRAL_CONTAINER_ID in os.environ:
            # Code in a container calling a function or class of its own app, which runs.
            if self._in_container is None:
                client = default_client()
                response = client.call(
                    client.stub.LookupClass, control_pb2.LookupClassRequest(app_id=app_id, class_name=self.name),
                )
                self._in_container = ResolvedClass(client, response.app_id, response.class_def)
            return self._in_container
        if running is None:
            raise InvalidError(
                f"app {self.app.name or '(unnamed)'} is not running: call {self.name} methods inside `with app.run():`, "
                f"under `corral run`, or look up a deployed class with corral.Cls.from_name(app_name, {self.name!r})"
            )
        return ResolvedClass(running.client, running.app_id, running.class_defs[self.name])

    def forget(self) -> None:
        self._in_container = None


class App:
    """A named set of classes.

    Example:
        app = corral.App("my-app")

        @app.cls()
        class Counter:
            @corral.method()
            def increment(self, value: int):
                return value + 1

        with app.run():
            print(Counter().increment.remote(5))  # 6
    """

    def __init__(self, name: str | None = None, *, image: Image | None = None, secrets: Sequence[Secret] = ()) -> None:
        problem = None if name is None else name_problem("app", name)
        if problem:
            raise InvalidError(problem)
        self.name = name
        self._image = image
        self._secrets = list(secrets)
        self.registered_classes: dict[str, Cls] = {}
        self.local_entrypoints: dict[str, Callable[..., Any]] = {}
        self.running: RunningApp | None = None
        self._stop_heartbeat = threading.Event()

    def cls(
        self,
        *,
        image: Image | None = None,
        gpu: str | Sequence[str] | None = None,
        cpu: float | tuple[float, float] | None = None,
        memory: int | tuple[int, int] | None = None,
        secrets: Sequence[Secret] = (),
        timeout: float | None = None,
        retries: int | Retries | None = None,
        min_containers: int | None = None,
        max_containers: int | None = None,
        buffer_containers: int | None = None,
        scaledown_window: float | None = None,
        enable_memory_snapshot: bool = False,
        startup_timeout: float | None = None,
    ) -> Callable[[type], Cls]:
        """Turn a class into a Corral class. Every argument is validated here.

        - image: the environment recipe (see `Image`).
        - gpu: "A100", "H100:2", "any", or a list of fallbacks; placed on nodes whose NVML inventory matches.
        - cpu, memory: cores and MiB per container, reserved for placement and enforced as a hard limit
          (a CPU quota, a memory limit: the kernel kills a container above it); or (request, limit).
        - secrets: `Secret`s injected as environment variables.
        - timeout: seconds an input may run (default 300) before it fails with `FunctionTimeoutError`.
        - startup_timeout: seconds a container may take to start (imports, `@enter` hooks) before it
          is stopped and its callers get an init error; default: the timeout (at least 5 s).
        - retries: an int or `Retries`; failed inputs run again.
        - min_containers, max_containers, buffer_containers, scaledown_window (default 60 s): autoscaling.
        - enable_memory_snapshot: restore containers from a CRIU snapshot taken after the
          `@enter(snap=True)` hooks; secrets reach the container only after the snapshot point.

        Example:
            @app.cls(gpu="A100", timeout=600)
            class Model: ...
        """
        options = _options.build_options(
            image=image or self._image, gpu=gpu, cpu=cpu, memory=memory, secrets=[*self._secrets, *secrets],
            timeout=timeout, retries=retries, min_containers=min_containers, max_containers=max_containers,
            buffer_containers=buffer_containers, scaledown_window=scaledown_window,
            enable_memory_snapshot=enable_memory_snapshot, startup_timeout=startup_timeout,
        )
        options = merge_options(_options.class_defaults(), options)

        def wrap(user_cls: type) -> Cls:
            problem = name_problem("class", user_cls.__name__)
            if problem:
                raise InvalidError(problem)
            definition = ClassDefinition.from_class(user_cls, options)
            if not definition.methods:
                raise InvalidError(f"{definition.name} has no @corral.method(); nothing could be called")
            handle = Cls(_LocalSource(definition, self))
            self.registered_classes[definition.name] = handle
            return handle

        return wrap

    def function(
        self,
        *,
        image: Image | None = None,
        gpu: str | Sequence[str] | None = None,
        cpu: float | tuple[float, float] | None = None,
        memory: int | tuple[int, int] | None = None,
        secrets: Sequence[Secret] = (),
        timeout: float | None = None,
        retries: int | Retries | None = None,
        min_containers: int | None = None,
        max_containers: int | None = None,
        buffer_containers: int | None = None,
        scaledown_window: float | None = None,
        enable_memory_snapshot: bool = False,
        startup_timeout: float | None = None,
        schedule: Any = None,
    ) -> Callable[[Any], Function]:
        """Turn a plain function into a Corral function. It takes `@app.cls()`'s options, and
        `schedule=` (`corral.Period` or `corral.Cron`: a deployed function then runs by itself).
        `@corral.concurrent(...)`, `@corral.batched(...)` and the web decorators go below it.

        Example:
            @app.function(gpu="A100", timeout=600)
            def embed(text: str) -> list[float]: ...

            with app.run():
                embed.remote("hello")
        """
        make_class = self.cls(
            image=image, gpu=gpu, cpu=cpu, memory=memory, secrets=secrets, timeout=timeout, retries=retries,
            min_containers=min_containers, max_containers=max_containers, buffer_containers=buffer_containers,
            scaledown_window=scaledown_window, enable_memory_snapshot=enable_memory_snapshot, startup_timeout=startup_timeout,
        )
        schedule_proto = schedules.to_proto(schedule)

        def wrap(f: Any) -> Function:
            handle = make_class(as_class(f))
            assert handle.definition is not None
            object.__setattr__(handle.definition, "is_function", True)
            object.__setattr__(handle.definition, "schedule", schedule_proto)
            raw = f.raw_f if isinstance(f, PartialFunction) else f
            return Function(handle, raw)

        return wrap

    def local_entrypoint(self, name: str | None = None) -> Callable[[F], F]:
        """Mark the function `corral run` calls, inside `app.run()`.

        Example:
            @app.local_entrypoint()
            def main():
                print(Counter().increment.remote(1))
        """

        def wrap(f: F) -> F:
            self.local_entrypoints[name or f.__name__] = f
            return f

        return wrap

    def _publish(self, client: Client, kind: control_pb2.AppKind.ValueType, name: str) -> RunningApp:
        if not self.registered_classes:
            raise InvalidError(f"app {name!r} has no functions or classes; decorate one with @app.function() or @app.cls()")
        definitions = [c.definition for c in self.registered_classes.values()]
        modules = {d.module for d in definitions if d is not None}
        if len(modules) != 1:
            raise InvalidError(f"an app's classes must live in one module, found {sorted(modules)}")
        module = sys.modules[modules.pop()]
        for d in definitions:
            assert d is not None
            if "<locals>" in d.user_cls.__qualname__:
                raise InvalidError(f"{d.user_cls.__qualname__} is defined inside a function; define classes at module level")
        bundle = build_bundle(module)
        if module.__name__ == "__main__":
            # Containers import the script under its file name and return its types by reference to
            # that name; here that name must mean this very module, so the caller gets its own types.
            sys.modules.setdefault(bundle.module, module)
        present = client.call(client.stub.HasBundle, control_pb2.HasBundleRequest(hash=bundle.hash)).present
        if not present:
            def chunks() -> Iterator[control_pb2.UploadBundleRequest]:
                for offset in range(0, max(len(bundle.data), 1), _UPLOAD_CHUNK):
                    yield control_pb2.UploadBundleRequest(hash=bundle.hash if offset == 0 else "", data=bundle.data[offset:offset + _UPLOAD_CHUNK])

            client.call(client.stub.UploadBundle, chunks())
        # Images are built before the app exists, so its first container starts with no building.
        build_images(client, [d.options.image for d in definitions if d is not None and d.options.HasField("image")])
        class_defs = [d.to_proto(bundle.module) for d in definitions if d is not None]
        response = client.call(
            client.stub.CreateApp,
            control_pb2.CreateAppRequest(
                name=name, kind=kind, bundle_hash=bundle.hash, classes=class_defs, client_version=__version__
            ),
        )
        return RunningApp(client, response.app_id, response.version, {c.name: c for c in class_defs}, dict(response.web_urls))

    @contextlib.contextmanager
    def run(self, *, client: Client | None = None) -> Iterator[App]:
        """Run the app ephemerally for the duration of the block; it is stopped at exit.

        Without a configured server, an embedded cluster starts in the background.
        """
        if self.running is not None:
            raise InvalidError(f"app {self.name or '(unnamed)'} is already running")
        if env.CORRAL_CONTAINER_ID in os.environ and client is None:
            raise InvalidError(
                "app.run() inside a Corral container: this usually means the module runs `app.run()` at import "
                "time; move it under `if __name__ == \"__main__\":` or into an @app.local_entrypoint(). Code in a "
                "container calls its app's functions and classes directly (`f.remote(...)`)"
            )
        client = client or default_client()
        self.running = self._publish(client, control_pb2.APP_KIND_EPHEMERAL, self.name or "ephemeral")
        self._stop_heartbeat.clear()
        heartbeat = threading.Thread(target=self._heartbeat, args=(self.running,), daemon=True, name="corral-app-heartbeat")
        heartbeat.start()
        try:
            yield self
        finally:
            running, self.running = self.running, None
            self._stop_heartbeat.set()
            with contextlib.suppress(Exception):
                client.call(client.stub.StopApp, control_pb2.StopAppRequest(app=running.app_id), timeout=120)

    def _heartbeat(self, running: RunningApp) -> None:
        while not self._stop_heartbeat.wait(_HEARTBEAT_S):
            with contextlib.suppress(Exception):
                running.client.call(running.client.stub.AppHeartbeat, control_pb2.AppHeartbeatRequest(app_id=running.app_id), timeout=10)

    def deploy(self, name: str | None = None, *, client: Client | None = None) -> RunningApp:
        """Publish the app persistently (a new version if it exists). It survives server restarts.

        Example:
            app.deploy()  # or: corral deploy app.py
        """
        name = name or self.name
        if not name:
            raise InvalidError("a deployed app needs a name: corral.App('my-app') or deploy(name=...)")
        return self._publish(client or default_client(), control_pb2.APP_KIND_DEPLOYED, name)
