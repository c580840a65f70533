"""Semantics of `ServiceOptions` that every side of the wire must agree on."""

from __future__ import annotations

from corral_protocol.v1 import common_pb2


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
    for name in ("timeout_s", "retries", "concurrency", "batching", "enable_memory_snapshot", "image"):
        if override.HasField(name):
            if name in ("timeout_s", "enable_memory_snapshot"):
                setattr(merged, name, getattr(override, name))
            else:
                getattr(merged, name).CopyFrom(getattr(override, name))
    if override.HasField("autoscaler"):
        for field, value in override.autoscaler.ListFields():
            setattr(merged.autoscaler, field.name, value)
    merged.secrets.extend(override.secrets)
    return merged
