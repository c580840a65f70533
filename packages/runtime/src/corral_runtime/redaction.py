"""Keeps secret values out of what a container reports: errors, tracebacks and log lines.

A class's secrets are environment variables of its containers, so user code can put them in an
exception (`raise RuntimeError(os.environ)`) or print them. Two places replace every secret value
with `<secret KEY>` before it leaves the container's side:

- the worker, in each failed `Result` (message, traceback and the pickled exception) and in
  `InitFailed`: what callers see, and what the control plane logs;
- the node, in each line of the container's stdout and stderr that it forwards to its log, and in
  the stderr tail it reports when a container dies.

Which variables are secrets: every key of `StartContainer.env` except the `CORRAL_*` ones the
control plane adds (app id, name, kind). The node lists them, names only, in
`env.CORRAL_SECRET_KEYS` for the worker. Values shorter than MIN_LENGTH characters are not
masked: they would garble every message ("1", "true") and redaction could not hide them anyway.

Example:
    redactor = Redactor({"API_KEY": "sk-123456"})
    redactor.text("failed with sk-123456")  # 'failed with <secret API_KEY>'
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping
from typing import Any

from corral import container_api as sdk
from corral_protocol import env
from corral_protocol.v1 import common_pb2

MIN_LENGTH = 4
# The prefix of the control plane's own variables in a StartContainer.env (app id, name, kind);
# every other variable there comes from a secret.
_PLATFORM_PREFIX = "CORRAL_"


def secret_keys(container_env: Mapping[str, str]) -> list[str]:
    """The keys of a `StartContainer.env` that come from the class's secrets."""
    return sorted(key for key in container_env if not key.startswith(_PLATFORM_PREFIX))


class Redactor:
    """Replaces the values of a set of secrets in text, bytes, plain data and `Result`s."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        forms: dict[str, str] = {}
        for key, value in secrets.items():
            if len(value) < MIN_LENGTH:
                continue
            # The value as written, and as repr() and JSON escape it (a dict of the environment
            # in a message shows values through repr).
            for form in (value, repr(value)[1:-1], json.dumps(value)[1:-1]):
                forms.setdefault(form, key)
        ordered = sorted(forms, key=len, reverse=True)  # a value containing another one wins
        self._mask = {form: f"<secret {key}>" for form, key in forms.items()}
        self._text = re.compile("|".join(re.escape(form) for form in ordered)) if ordered else None
        self._data = re.compile(b"|".join(re.escape(form.encode()) for form in ordered)) if ordered else None

    @classmethod
    def from_container_env(cls, container_env: Mapping[str, str]) -> Redactor:
        """The node's: the secrets of a `StartContainer.env`."""
        return cls({key: container_env[key] for key in secret_keys(container_env)})

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Redactor:
        """The worker's: the variables the node named in CORRAL_SECRET_KEYS."""
        keys = [key for key in environ.get(env.CORRAL_SECRET_KEYS, "").split(",") if key]
        return cls({key: environ[key] for key in keys if key in environ})

    def __bool__(self) -> bool:
        return self._text is not None

    def text(self, text: str) -> str:
        if self._text is None:
            return text
        return self._text.sub(lambda match: self._mask[match.group(0)], text)

    def data(self, data: bytes) -> bytes:
        if self._data is None:
            return data
        return self._data.sub(lambda match: self._mask[match.group(0).decode()].encode(), data)

    def found_in(self, data: bytes) -> bool:
        return self._data is not None and self._data.search(data) is not None

    def value(self, value: Any) -> Any:
        """Strings inside plain data (tuples, lists, dicts, sets), masked; anything else as it is."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes):
            return self.data(value)
        if isinstance(value, (tuple, list, set, frozenset)):
            return type(value)(self.value(item) for item in value)
        if isinstance(value, Mapping):
            return {self.value(k): self.value(v) for k, v in value.items()}
        return value

    def exception(self, exc: BaseException) -> BaseException:
        """A copy of an exception of the same type with its arguments and attributes masked."""
        clone = copy.copy(exc)
        clone.args = self.value(exc.args)
        state = getattr(exc, "__dict__", None)
        if state:
            for name, attribute in state.items():
                setattr(clone, name, self.value(attribute))
        return clone

    def result(self, result: common_pb2.Result) -> common_pb2.Result:
        """A failed Result with no secret value left in it. The exception keeps its type when a
        masked copy of it pickles cleanly; otherwise it is dropped, and the caller gets a
        RemoteError with the masked message and traceback."""
        if self._data is None or result.status == common_pb2.RESULT_STATUS_SUCCESS:
            return result
        leaks = self.found_in(result.message.encode()) or self.found_in(result.traceback.encode())
        if not (leaks or (result.HasField("exception") and self.found_in(result.exception.data))):
            return result
        masked = common_pb2.Result()
        masked.CopyFrom(result)
        masked.message = self.text(result.message)
        masked.traceback = self.text(result.traceback)
        if result.exception.format == common_pb2.PAYLOAD_FORMAT_JSON:
            # Type, message and traceback as JSON text: the escaped forms of each value are masked.
            masked.exception.data = self.data(result.exception.data)
            return masked
        if result.HasField("exception") and self.found_in(result.exception.data):
            masked.ClearField("exception")
            try:
                # user_error pickles the masked copy and checks that it loads back.
                rebuilt = sdk.user_error(self.exception(sdk.decode_value(result.exception)))
            except Exception:
                return masked
            if rebuilt.HasField("exception") and not self.found_in(rebuilt.exception.data):
                masked.exception.CopyFrom(rebuilt.exception)
        return masked
