"""Secrets: environment variables injected into containers, never stored in code bundles."""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.exception import InvalidError
from corral_protocol.names import name_problem
from corral_protocol.v1 import common_pb2


@dataclass(frozen=True)
class Secret:
    """A set of environment variables for a class's containers.

    Example:
        @app.cls(secrets=[corral.Secret.from_name("model-api-key")])
        class Model: ...
    """

    name: str = ""
    values: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_name(cls, name: str) -> Secret:
        """A secret stored on the server with `corral secret create NAME KEY=VALUE ...`."""
        if not isinstance(name, str) or not name:
            raise InvalidError("Secret.from_name needs a non-empty name")
        problem = name_problem("secret", name)
        if problem:
            raise InvalidError(problem)
        return cls(name=name)

    @classmethod
    def from_dict(cls, values: dict[str, str]) -> Secret:
        """A secret given inline. Keys must be environment variable names, values strings."""
        if not isinstance(values, dict):
            raise InvalidError(f"Secret.from_dict needs a dict, got {type(values).__name__}")
        for key, value in values.items():
            if not isinstance(key, str) or not key.isidentifier():
                raise InvalidError(f"secret key {key!r} is not a valid environment variable name")
            if not isinstance(value, str):
                raise InvalidError(f"secret value for {key!r} must be a str, got {type(value).__name__}")
        return cls(values=dict(values))

    def to_proto(self) -> common_pb2.SecretRef:
        if self.name:
            return common_pb2.SecretRef(name=self.name)
        return common_pb2.SecretRef(inline=common_pb2.InlineSecret(values=self.values))
