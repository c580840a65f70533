"""Container image recipes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from corral.exception import InvalidError
from corral_protocol.v1 import common_pb2


@dataclass(frozen=True)
class Image:
    """A recipe for the environment a class runs in.

    The recipe is hashed into every snapshot key. The v0 runtime runs containers in the node's own
    Python environment; before the class's `@enter` hooks run, the container checks that every
    `pip_install` requirement's distribution is installed there and fails with an init error naming
    the missing ones otherwise.

    Example:
        image = corral.Image.debian_slim().pip_install("numpy")
    """

    base: str = "debian_slim"
    python_version: str = ""
    pip_packages: tuple[str, ...] = ()
    apt_packages: tuple[str, ...] = ()
    env_vars: tuple[tuple[str, str], ...] = ()
    commands: tuple[str, ...] = ()

    @classmethod
    def debian_slim(cls, python_version: str | None = None) -> Image:
        """The default base image."""
        return cls(base="debian_slim", python_version=python_version or "")

    def pip_install(self, *packages: str) -> Image:
        """Add pip requirements."""
        return replace(self, pip_packages=self.pip_packages + _strings("pip_install", packages))

    def apt_install(self, *packages: str) -> Image:
        """Add Debian packages."""
        return replace(self, apt_packages=self.apt_packages + _strings("apt_install", packages))

    def env(self, variables: dict[str, str]) -> Image:
        """Add environment variables."""
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in variables.items()):
            raise InvalidError("Image.env needs a dict of str to str")
        return replace(self, env_vars=self.env_vars + tuple(sorted(variables.items())))

    def run_commands(self, *commands: str) -> Image:
        """Add shell commands run at build time."""
        return replace(self, commands=self.commands + _strings("run_commands", commands))

    def to_proto(self) -> common_pb2.ImageSpec:
        return common_pb2.ImageSpec(
            base=self.base,
            python_version=self.python_version,
            pip_packages=list(self.pip_packages),
            apt_packages=list(self.apt_packages),
            env=dict(self.env_vars),
            commands=list(self.commands),
        )

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.to_proto().SerializeToString(deterministic=True)).hexdigest()


def _strings(what: str, values: tuple[str, ...]) -> tuple[str, ...]:
    flat: list[str] = []
    for value in values:
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if not isinstance(item, str) or not item.strip():
                raise InvalidError(f"Image.{what} takes non-empty strings, got {item!r}")
            flat.append(item)
    return tuple(flat)
