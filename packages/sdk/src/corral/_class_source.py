"""What a class handle stands on: `ResolvedClass` (a class as the server knows it, with the client
that found it) and `ClassSource` (where a `Cls` finds its class: defined in this program, or
looked up by name on a server)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol

from corral._client import Client
from corral._definition import ClassDefinition
from corral_protocol.v1 import common_pb2


@dataclass(frozen=True)
class ResolvedClass:
    """A class as the server knows it: its app and definition."""

    client: Client
    app_id: str
    class_def: common_pb2.ClassDef

    @functools.cached_property
    def method_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.class_def.methods)


class ClassSource(Protocol):
    """Where a `Cls` handle finds its class: defined in this program, or looked up on a server."""

    @property
    def name(self) -> str: ...

    @property
    def definition(self) -> ClassDefinition | None: ...

    def resolve(self) -> ResolvedClass:
        """The class as the server knows it (RPCs on first use)."""
        ...

    def forget(self) -> None:
        """Drop what `resolve` learnt, after the class's app was redeployed."""
        ...
