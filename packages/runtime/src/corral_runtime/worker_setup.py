"""What the worker needs before it serves, and its class's hooks: its identity from the environment,
the failure type of an import or `@enter` hook, the check of an image's requirements against the
node's environment, importing the class (with its snap=True `@enter` hooks), running the other
`@enter` hooks and the `@exit` hooks, and a batched container's capacity."""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import re
import sys
import traceback
from dataclasses import dataclass
from typing import Any

from corral import container_api as sdk
from corral_protocol import env
from corral_protocol.parameters import decode_parameters
from corral_protocol.v1 import common_pb2, worker_pb2


@dataclass(frozen=True)
class Identity:
    control_url: str
    container_id: str
    token: str
    bundle_dir: str

    @classmethod
    def from_env(cls) -> Identity:
        return cls(
            os.environ[env.CORRAL_CONTROL_URL], os.environ[env.CORRAL_CONTAINER_ID],
            os.environ[env.CORRAL_CONTAINER_TOKEN], os.environ.get(env.CORRAL_BUNDLE_DIR, ""),
        )


class InitFailure(Exception):
    """Importing or entering the user's class failed; carries what to report."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.exc = exc


_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def missing_requirements(image: common_pb2.ImageSpec) -> list[str]:
    """The image's pip requirements whose distributions are not installed in this environment."""
    missing = []
    for requirement in image.pip_packages:
        match = _REQUIREMENT_NAME.match(requirement)
        if match is None:
            continue
        try:
            importlib.metadata.distribution(match.group(1))
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
    return missing


async def call_hook(function: Any) -> None:
    result = function()
    if inspect.isawaitable(result):
        await result


async def load_class(init: worker_pb2.ContainerInit, bundle_dir: str) -> tuple[sdk.ClassDefinition, Any]:
    """Import the class, make its instance and run its snap=True `@enter` hooks (once per process
    image: they run before the snapshot point)."""
    in_image = bool(os.environ.get(env.CORRAL_IMAGE_HASH))  # built with its requirements
    missing = [] if in_image else missing_requirements(init.class_def.options.image)
    if missing:
        raise ModuleNotFoundError(
            f"the class's image needs {', '.join(missing)}, which this node's Python environment lacks; "
            "install them on the node"
        )
    definition = sdk.load_class(init.class_def, bundle_dir)
    instance = definition.new_instance(decode_parameters(init.parameters))
    await run_enter_hooks(definition, instance, snap=True)
    return definition, instance


async def run_enter_hooks(definition: sdk.ClassDefinition, instance: Any, snap: bool) -> None:
    """The `@enter` hooks whose `snap` flag is `snap`, in order; the first that raises stops them."""
    for hook in definition.enter_hooks:
        if hook.snap == snap:
            await call_hook(getattr(instance, hook.name))


async def run_exit_hooks(definition: sdk.ClassDefinition, instance: Any) -> None:
    """Every `@exit` hook, in order; one that raises is logged and the next runs."""
    for hook in definition.exit_hooks:
        try:
            await call_hook(getattr(instance, hook.name))
        except Exception:
            print(f"corral worker: @exit hook {hook.name} raised:", file=sys.stderr)
            traceback.print_exc()


def batched_capacity(max_inputs: int, max_batch_size: int) -> int:
    """Inputs a batched container holds at once (running and waiting for the next batch)."""
    return max(max_inputs, 2 * max_batch_size)
