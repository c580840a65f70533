"""The SDK's interface to Corral's container runtime (`corral-runtime`); not for user code.

The worker inside every container loads the user's class, makes its instance and encodes its
payloads with the SDK's own code, because only the SDK knows what its decorators recorded and how
its client pickles. These are the only SDK names the runtime uses. They change only with the SDK's
version, and `corral-runtime` pins that exact version (`corral==X.Y.Z`), so a container never runs
a worker against an SDK it was not built with. Everything else in `corral._*` stays private.

Example:
    definition = load_class(init.class_def, bundle_dir)
    instance = definition.new_instance(decode_parameters(init.parameters))  # corral_protocol.parameters
    method = getattr(instance, inp.method)
    args, kwargs = decode_call(inp.args, method)  # ArgumentError: answer invalid_argument(...)
    result = encode_result(method(*args, **kwargs), inp.args.format)
"""

from __future__ import annotations

import importlib
import inspect
import sys
import threading
from typing import Any

from corral import _serialization
from corral._context import current_input_id, input_scope, mark_serving
from corral._definition import ClassDefinition, Hook, MethodInfo
from corral._serialization import JSON, PICKLE, decode_args, decode_value, encode_args, encode_result, user_error
from corral.cls import Cls
from corral.function import Function
from corral_protocol.v1 import common_pb2


def load_class(class_def: common_pb2.ClassDef, bundle_dir: str) -> ClassDefinition:
    """Import the module of `class_def` (from the code bundle in `bundle_dir`, put first on
    `sys.path`) and return what `@app.cls()` recorded about the class.

    Raises what the import raises, or TypeError when the name is not an `@app.cls()` class."""
    if bundle_dir and bundle_dir not in sys.path:
        sys.path.insert(0, bundle_dir)
    module = importlib.import_module(class_def.module)
    target: Any = module
    for part in class_def.name.split("."):
        target = getattr(target, part)
    if isinstance(target, Function):  # an @app.function: its one-method class
        target = target._cls
    mark_serving()  # import is over: the code may now call other functions and classes
    if not isinstance(target, Cls) or target.definition is None:
        raise TypeError(f"{class_def.module}.{class_def.name} is not a class decorated with @app.cls()")
    return target.definition


_fetched: dict[str, list[Any]] = {}  # blob id -> the bytes read for inputs not decoded yet
_fetched_lock = threading.Lock()


def _read_blob(args: common_pb2.Payload) -> Any:
    from corral import _blobs
    from corral._client import default_client

    return _blobs.get(default_client(), args.blob_id, args.blob_size)


def fetch_args(args: common_pb2.Payload) -> Any:
    """Read the blob that an input's arguments name, for `decode_call` (blocking: call it off the
    event loop); returns a handle for `release_args`. The container's token may read only the
    blobs of its own inputs. The bytes stay out of the message: the worker holds them once, beside
    the decoded arguments."""
    if not args.blob_id:
        return None
    data = _read_blob(args)
    with _fetched_lock:
        _fetched.setdefault(args.blob_id, []).append(data)
    return data


def release_args(args: common_pb2.Payload, handle: Any) -> None:
    """The input is over: drop the bytes `fetch_args` read for it if no decoding took them."""
    if handle is None:
        return
    with _fetched_lock:
        held = _fetched.get(args.blob_id, [])
        for i, data in enumerate(held):
            if data is handle:
                del held[i]
                break
        if not held:
            _fetched.pop(args.blob_id, None)


def decode_call(payload: common_pb2.Payload, function: Any, signature: inspect.Signature | None = None,
                batched: bool = False) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """`corral._serialization.decode_call`, with the bytes `fetch_args` read for a blob (read here,
    blocking, when another input with the same blob took them first)."""
    data = None
    if payload.blob_id:
        with _fetched_lock:
            held = _fetched.get(payload.blob_id)
            if held:
                data = held.pop(0)
                if not held:
                    del _fetched[payload.blob_id]
        if data is None:
            data = _read_blob(payload)
    return _serialization.decode_call(payload, function, signature, batched, data)


def offload_result(result: common_pb2.Result, for_direct_caller: bool = False) -> common_pb2.Result:
    """A PICKLE result whose value is above the blob threshold, with the value stored as a blob
    (blocking: call it off the event loop). Other results are returned as they are: JSON results
    stay inline for clients that know nothing of blobs."""
    from corral import _blobs
    from corral._client import default_client
    from corral_protocol import payloads

    if len(result.value.data) <= payloads.BLOB_THRESHOLD_BYTES or result.value.format != PICKLE:
        return result
    return _blobs.offload_result(default_client(), result, for_direct_caller)


__all__ = [
    "JSON",
    "PICKLE",
    "ClassDefinition",
    "Hook",
    "MethodInfo",
    "decode_args",
    "decode_call",
    "decode_value",
    "encode_args",
    "current_input_id",
    "encode_result",
    "fetch_args",
    "input_scope",
    "offload_result",
    "release_args",
    "load_class",
    "user_error",
]
