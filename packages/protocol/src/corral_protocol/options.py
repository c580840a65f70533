"""Semantics of `ServiceOptions` that every side of the wire must agree on.

The SDK (early errors, defaults), the control plane (the authority) and the worker (slots,
batches, timeouts) all read options through these functions, so each rule has one home.
"""

from __future__ import annotations

from collections.abc import Sequence

from corral_protocol.v1 import common_pb2

DEFAULT_TIMEOUT_S = 300.0
"""Seconds an input may run when the class sets no `timeout`."""


def effective_timeout_s(options: common_pb2.ServiceOptions) -> float:
    """Seconds an input of a service with these (merged) options may run."""
    return options.timeout_s or DEFAULT_TIMEOUT_S


MIN_DEFAULT_STARTUP_TIMEOUT_S = 5.0
"""Without `startup_timeout`, a start (process, imports) is not shortened below this by a tiny `timeout`."""


def effective_startup_timeout_s(options: common_pb2.ServiceOptions) -> float:
    """Seconds a container of a service with these (merged) options may take to start: its
    `startup_timeout` when set (as in Modal, separate from `timeout`), else the input timeout."""
    if options.HasField("startup_timeout_s"):
        return options.startup_timeout_s
    return max(MIN_DEFAULT_STARTUP_TIMEOUT_S, effective_timeout_s(options))


CANCEL_GRACE_S = 5.0
"""Seconds a cancelled sync method has to stop (once InputCancellation is raised in its thread)
before its container gives up on it and exits, to be replaced."""


def effective_max_inputs(options: common_pb2.ServiceOptions) -> int:
    """Inputs one container runs at once (`@corral.concurrent` / `with_concurrency`; default 1)."""
    return options.concurrency.max_inputs or 1


def batched_method(
    class_def: common_pb2.ClassDef, options: common_pb2.ServiceOptions,
) -> tuple[str, common_pb2.BatchingConfig] | None:
    """The batched method of a service and its batching: `with_batching` on the service wins over
    `@corral.batched` on the method. None when the service does not batch."""
    for method in class_def.methods:
        if options.batching.max_batch_size:
            return method.name, options.batching
        if method.batching.max_batch_size:
            return method.name, method.batching
    return None


def batching_violation(class_name: str, methods: Sequence[str], batched: Sequence[str] = (), *, with_batching: bool = False) -> str | None:
    """Why a class cannot batch as asked, or None: a batched method must be its class's only
    method (for `@corral.batched` on `batched`, and for `with_batching` on the whole class)."""
    if with_batching and len(methods) != 1:
        return f"with_batching needs a class with exactly one method; {class_name} has {', '.join(methods) or 'none'}"
    if batched and len(methods) > 1:
        others = ", ".join(name for name in methods if name not in batched)
        return (
            f"{class_name}.{batched[0]} is batched, so it must be the class's only method "
            f"(it also has {others}); put the other methods in another class"
        )
    return None


def merge_options(base: common_pb2.ServiceOptions, override: common_pb2.ServiceOptions) -> common_pb2.ServiceOptions:
    """Apply an override: fields it sets replace the base's; secrets add to the base's."""
    merged = common_pb2.ServiceOptions()
    merged.CopyFrom(base)
    if override.HasField("resources"):
        res = override.resources
        if res.cpu:
            merged.resources.cpu, merged.resources.cpu_limit = res.cpu, res.cpu_limit
        if res.memory_mib:
            merged.resources.memory_mib, merged.resources.memory_limit_mib = res.memory_mib, res.memory_limit_mib
        if res.HasField("gpu"):
            merged.resources.gpu.CopyFrom(res.gpu)
    for name in ("timeout_s", "retries", "concurrency", "batching", "enable_memory_snapshot", "image", "startup_timeout_s"):
        if override.HasField(name):
            if name in ("timeout_s", "enable_memory_snapshot", "startup_timeout_s"):
                setattr(merged, name, getattr(override, name))
            else:
                getattr(merged, name).CopyFrom(getattr(override, name))
    if override.HasField("autoscaler"):
        for field, value in override.autoscaler.ListFields():
            setattr(merged.autoscaler, field.name, value)
    merged.secrets.extend(override.secrets)
    return merged
