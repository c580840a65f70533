"""Memory snapshot keys and the control plane's book of images: who holds what, who is taking
one, which keys are broken.

A snapshot key names the state a worker holds at its snapshot point: the app, its code bundle, the
class definition (with its image recipe), the parameters and the service's options that shape the
process. Secrets and autoscaler settings are left out: secrets never enter an image, and scaling
does not change what a process holds. Nodes combine the key with their host fingerprint (Python,
CRIU, kernel, CPU flags; see corral_runtime.snapshots), so an image is only restored where it was
written.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from corral_protocol.v1 import common_pb2

log = logging.getLogger("corral.scheduler.snapshots")

# Failed dumps or restores of one key before its containers start cold for good (until the key
# changes, or `corral snapshot rm` clears it).
MAX_FAILURES = 3


def snapshot_key(
    app_id: str,
    bundle_hash: str,
    class_def: common_pb2.ClassDef,
    parameters: Iterable[common_pb2.NamedParameter],
    options: common_pb2.ServiceOptions,
) -> str:
    shaped = common_pb2.ServiceOptions()
    shaped.CopyFrom(options)
    shaped.ClearField("secrets")
    shaped.ClearField("autoscaler")
    digest = hashlib.sha256()
    for part in (b"corral-snapshot-v1", app_id.encode(), bundle_hash.encode(),
                 class_def.SerializeToString(deterministic=True), shaped.SerializeToString(deterministic=True)):
        digest.update(part)
        digest.update(b"\0")
    for param in sorted(parameters, key=lambda p: p.name):
        digest.update(param.SerializeToString(deterministic=True))
        digest.update(b"\1")
    return digest.hexdigest()


class StartMode(Enum):
    COLD = ""  # a plain cold start
    TAKE = "take"  # cold start, then the node dumps the worker at its snapshot point
    RESTORE = "restore"  # restore the node's image (cold if that fails)


@dataclass
class SnapshotBook:
    """What the control plane knows about snapshot images, fed by node heartbeats and results."""

    images: dict[str, list[common_pb2.SnapshotImage]] = field(default_factory=dict)  # by node id
    taking: dict[tuple[str, str], str] = field(default_factory=dict)  # (node id, key) -> container id
    failures: dict[str, int] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)
    _warned: set[tuple[str, str]] = field(default_factory=set)

    def held_keys(self, node_id: str) -> set[str]:
        return {image.snapshot_key for image in self.images.get(node_id, ())}

    def mode_for(self, node_id: str, key: str) -> StartMode:
        """How a new container of this key starts on this node. One container per (node, key) dumps at a time."""
        if key in self.broken:
            return StartMode.COLD
        if key in self.held_keys(node_id):
            return StartMode.RESTORE
        if (node_id, key) in self.taking:
            return StartMode.COLD
        return StartMode.TAKE

    def warn_unsupported(self, node_name: str, class_name: str, reason: str) -> None:
        """One warning per class and node: snapshots were asked for where CRIU cannot take them."""
        if (node_name, class_name) in self._warned:
            return
        self._warned.add((node_name, class_name))
        log.warning(
            "%s has enable_memory_snapshot=True but node %s cannot take memory snapshots (%s); "
            "its containers start cold there", class_name, node_name, reason or "not reported",
        )

    def node_images(self, node_id: str, images: Iterable[common_pb2.SnapshotImage]) -> None:
        self.images[node_id] = list(images)

    def image_taken(self, node_id: str, image: common_pb2.SnapshotImage) -> None:
        held = [i for i in self.images.get(node_id, ()) if i.snapshot_key != image.snapshot_key]
        self.images[node_id] = [*held, image]

    def forget_image(self, node_id: str, key: str) -> None:
        """The node deleted its image of this key (a restore failed)."""
        self.images[node_id] = [i for i in self.images.get(node_id, ()) if i.snapshot_key != key]

    def failed(self, key: str, why: str) -> None:
        count = self.failures.get(key, 0) + 1
        self.failures[key] = count
        if count >= MAX_FAILURES and key not in self.broken:
            self.broken.add(key)
            log.warning("snapshot %s failed %d times (last: %s); its containers start cold from now on", key[:12], count, why)
        else:
            log.warning("snapshot %s failed (%s); the container starts cold instead", key[:12], why)

    def forget(self, keys: Iterable[str]) -> None:
        """Deleted images: their keys may be taken afresh."""
        for key in keys:
            self.failures.pop(key, None)
            self.broken.discard(key)
            for node_id, images in self.images.items():
                self.images[node_id] = [i for i in images if i.snapshot_key != key]

    def forget_node(self, node_id: str) -> None:
        self.images.pop(node_id, None)
        for slot in [s for s in self.taking if s[0] == node_id]:
            del self.taking[slot]
