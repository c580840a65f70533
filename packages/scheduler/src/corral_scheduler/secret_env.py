"""Secrets, on the driver's side of the control plane: named secrets live in the store, so checking
that they exist and turning references into a container's environment are I/O, which the pure
core never does. The core names the references (`StartContainer.secrets`); the driver resolves them."""

from __future__ import annotations

from collections.abc import Iterable

from corral_protocol.names import name_problem
from corral_protocol.v1 import common_pb2
from corral_scheduler.errors import InvalidArgument, NotFound
from corral_scheduler.store import Store


class Secrets:
    def __init__(self, store: Store) -> None:
        self.store = store

    def set(self, name: str, values: dict[str, str]) -> None:
        problem = name_problem("secret", name)
        if problem:
            raise InvalidArgument(problem)
        for key in values:
            if not key.isidentifier():
                raise InvalidArgument(f"secret key {key!r} is not a valid environment variable name")
        self.store.set_secret(name, values)

    def names(self) -> list[str]:
        return self.store.secret_names()

    def delete(self, name: str) -> None:
        """Forget a named secret. Running containers keep the values they started with; new
        containers of a class that names it fail to start, naming the secret."""
        if not self.store.delete_secret(name):
            raise NotFound(f"secret {name!r} not found")

    def check(self, refs: Iterable[common_pb2.SecretRef], hint: bool = False) -> None:
        """Every named secret exists (inline ones always do)."""
        for ref in refs:
            if ref.WhichOneof("source") == "name" and self.store.get_secret(ref.name) is None:
                how = f"; create it with `corral secret create {ref.name} KEY=VALUE`" if hint else ""
                raise NotFound(f"secret {ref.name!r} not found{how}")

    def env(self, refs: Iterable[common_pb2.SecretRef]) -> dict[str, str]:
        """The environment variables the references give, in order (later ones win)."""
        env: dict[str, str] = {}
        for ref in refs:
            if ref.WhichOneof("source") == "name":
                values = self.store.get_secret(ref.name)
                if values is None:
                    raise NotFound(f"secret {ref.name!r} not found")
                env.update(values)
            else:
                env.update(ref.inline.values)
        return env
