"""Class handles: `Cls` (a class) and `Obj` (an instance bound to parameters). `Method` (a method
of an `Obj`) lives in `_method`, what a `Cls` stands on (`ResolvedClass`, `ClassSource`) in
`_class_source`; both are importable from here as before."""

from __future__ import annotations

import threading
from typing import Any

from corral import _options
from corral._calls import FunctionCall
from corral._class_source import ClassSource, ResolvedClass
from corral._client import Client, default_client
from corral._definition import ClassDefinition
from corral._image_build import HandleImage
from corral._method import Method, _run_maybe_async
from corral._parameters import ParameterField, bind_parameters, encode_parameters
from corral.exception import InvalidError
from corral.image import Image
from corral.retries import Retries
from corral.secret import Secret
from corral_protocol.options import batching_violation, merge_options
from corral_protocol.v1 import common_pb2, control_pb2


class _RemoteSource:
    """A class looked up by name on the server, on first use."""

    def __init__(self, app_name: str, name: str, client: Client | None) -> None:
        self.app_name = app_name
        self.name = name
        self._client = client
        self._resolved: ResolvedClass | None = None
        self._lock = threading.Lock()

    @property
    def definition(self) -> None:
        return None

    def forget(self) -> None:
        with self._lock:
            self._resolved = None

    def resolve(self) -> ResolvedClass:
        with self._lock:
            if self._resolved is None:
                client = self._client or default_client()
                response = client.call(
                    client.stub.LookupClass,
                    control_pb2.LookupClassRequest(app_name=self.app_name, class_name=self.name),
                )
                self._resolved = ResolvedClass(client, response.app_id, response.class_def)
            return self._resolved


class Cls:
    """A handle to a Corral class. Calling it with parameters gives an `Obj`.

    Made by `@app.cls()` or `Cls.from_name(...)`. Handles are lazy: `with_options` and friends
    return new handles and make no RPC until the first call.

    Example:
        Model = corral.Cls.from_name("my-app", "Model")
        result = Model().predict.remote("input")
    """

    def __init__(self, source: ClassSource, overrides: common_pb2.ServiceOptions | None = None) -> None:
        self._source = source
        self._overrides = overrides or common_pb2.ServiceOptions()
        self._image = HandleImage()  # built when an instance first binds (`with_options(image=...)`)

    @classmethod
    def from_name(cls, app_name: str, name: str, *, client: Client | None = None) -> Cls:
        """A lazy handle to class `name` of the deployed app `app_name`. The lookup happens on first use;
        an unknown app or class raises `NotFoundError` then."""
        if not app_name or not name:
            raise InvalidError("Cls.from_name needs an app name and a class name")
        return cls(_RemoteSource(app_name, name, client))

    @property
    def name(self) -> str:
        return self._source.name

    @property
    def definition(self) -> ClassDefinition | None:
        """The local class definition, for classes defined in this program."""
        return self._source.definition

    def _with(self, override: common_pb2.ServiceOptions) -> Cls:
        return Cls(self._source, merge_options(self._overrides, override))

    def with_options(
        self,
        *,
        gpu: str | list[str] | None = None,
        cpu: float | tuple[float, float] | None = None,
        memory: int | tuple[int, int] | None = None,
        secrets: list[Secret] | None = None,
        timeout: float | None = None,
        retries: int | Retries | None = None,
        min_containers: int | None = None,
        max_containers: int | None = None,
        buffer_containers: int | None = None,
        scaledown_window: float | None = None,
        image: Image | None = None,
        startup_timeout: float | None = None,
    ) -> Cls:
        """A new handle whose services use these options; the original handle is unchanged.

        Example:
            ModelOnH100 = Model.with_options(gpu="H100", timeout=1200)
        """
        return self._with(
            _options.build_options(
                gpu=gpu, cpu=cpu, memory=memory, secrets=secrets, timeout=timeout, retries=retries,
                min_containers=min_containers, max_containers=max_containers,
                buffer_containers=buffer_containers, scaledown_window=scaledown_window, image=image,
                startup_timeout=startup_timeout,
            )
        )

    def with_concurrency(self, *, max_inputs: int, target_inputs: int | None = None) -> Cls:
        """A new handle whose containers each run up to `max_inputs` inputs at once.

        Example:
            ConcurrentModel = Model.with_concurrency(max_inputs=100, target_inputs=80)
        """
        return self._with(common_pb2.ServiceOptions(concurrency=_options.concurrency(max_inputs, target_inputs)))

    def with_batching(self, *, max_batch_size: int, wait_ms: int) -> Cls:
        """A new handle whose inputs are grouped into batches.

        Example:
            BatchedModel = Model.with_batching(max_batch_size=32, wait_ms=100)

        The class's single method then receives one list per argument and returns a list of the
        same length (see `corral.batched`).
        """
        definition = self._source.definition
        violation = None if definition is None else batching_violation(self.name, list(definition.methods), with_batching=True)
        if violation:
            raise InvalidError(violation)
        return self._with(common_pb2.ServiceOptions(batching=_options.batching(max_batch_size, wait_ms)))

    def __call__(self, *args: Any, **kwargs: Any) -> Obj:
        definition = self._source.definition
        if definition is not None:
            return Obj(self, bind_parameters(definition.parameters, args, kwargs, self.name))
        if args:
            raise InvalidError(f"{self.name}() takes parameters by keyword only, e.g. {self.name}(name=...)")
        return Obj(self, None, dict(kwargs))

    def __repr__(self) -> str:
        return f"Cls({self.name!r})"


class Obj:
    """An instance handle: a class bound to one parameter set. Its methods are `Method` handles."""

    def __init__(self, cls: Cls, parameters: dict[str, Any] | None, unchecked: dict[str, Any] | None = None) -> None:
        self._cls = cls
        self._parameters = parameters
        self._unchecked = unchecked or {}
        self._service: tuple[ResolvedClass, str] | None = None
        self._lock = threading.Lock()
        self._local_instance: Any = None

    def __getattr__(self, name: str) -> Method:
        if name.startswith("_"):
            raise AttributeError(name)
        definition = self._cls.definition
        if definition is not None and name not in definition.methods:
            raise AttributeError(f"{self._cls.name} has no @corral.method named {name!r}")
        method = Method(self, name)
        self.__dict__[name] = method  # later lookups skip __getattr__ (it is on every call's path)
        return method

    def _bind(self) -> tuple[ResolvedClass, str]:
        """Resolve the class and bind the service for this parameter set, once."""
        with self._lock:
            if self._service is None:
                resolved = self._cls._source.resolve()
                parameters = self._parameters
                if parameters is None:
                    fields = [ParameterField.from_proto(p) for p in resolved.class_def.parameters]
                    parameters = bind_parameters(fields, (), self._unchecked, self._cls.name)
                if self._cls._overrides.HasField("image"):  # before the service exists, as deploy builds before the app
                    self._cls._image.ensure_built(resolved.client, self._cls._overrides.image)
                response = resolved.client.call(
                    resolved.client.stub.BindService,
                    control_pb2.BindServiceRequest(
                        app_id=resolved.app_id,
                        class_name=self._cls.name,
                        parameters=encode_parameters(parameters),
                        options=self._cls._overrides,
                    ),
                )
                self._service = (resolved, response.service_id)
            return self._service

    def _rebind_after_redeploy(self) -> None:
        """After a redeploy the bound service is retired: forget it so the next call binds the new version."""
        with self._lock:
            self._service = None
        self._cls._source.forget()

    def _local(self) -> Any:
        """A real in-process instance with its enter hooks run, for `.local()`."""
        definition = self._cls.definition
        if definition is None:
            raise InvalidError(f".local() needs the class's code in this program; {self._cls.name} was looked up by name")
        if self._local_instance is None:
            instance = definition.new_instance(self._parameters or {})
            for hook in definition.enter_hooks:
                _run_maybe_async(getattr(instance, hook.name)())
            self._local_instance = instance
        return self._local_instance

    def update_autoscaler(
        self,
        *,
        min_containers: int | None = None,
        max_containers: int | None = None,
        buffer_containers: int | None = None,
        scaledown_window: float | None = None,
    ) -> None:
        """Change this parameter set's autoscaling at once, until the app is redeployed.

        Example:
            model.update_autoscaler(min_containers=2, max_containers=10, buffer_containers=1)
        """
        options = _options.build_options(
            min_containers=min_containers, max_containers=max_containers,
            buffer_containers=buffer_containers, scaledown_window=scaledown_window,
        )
        resolved, service_id = self._bind()
        resolved.client.call(
            resolved.client.stub.UpdateAutoscaler,
            control_pb2.UpdateAutoscalerRequest(service_id=service_id, settings=options.autoscaler),
        )


__all__ = ["Cls", "FunctionCall", "Method", "Obj"]
