"""What the worker needs before it serves: its identity from the environment, the failure type of
an import or `@enter` hook, the check of an image's requirements against the node's environment,
calling a (sync or async) hook, and a batched container's capacity."""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import re
from dataclasses import dataclass
from typing import Any

from corral_protocol import env
from corral_protocol.v1 import common_pb2


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


def batched_capacity(max_inputs: int, max_batch_size: int) -> int:
    """Inputs a batched container holds at once (running and waiting for the next batch)."""
    return max(max_inputs, 2 * max_batch_size)
