"""Snapshot keys (what invalidates an image) and the control plane's choice to take, restore or start cold."""

from __future__ import annotations

from corral_protocol.v1 import common_pb2
from corral_scheduler.snapshot_keys import MAX_FAILURES, SnapshotBook, StartMode, snapshot_key

CLASS = common_pb2.ClassDef(name="Model", module="app", options=common_pb2.ServiceOptions(enable_memory_snapshot=True))
PARAMS = [common_pb2.NamedParameter(name="size", value=common_pb2.ParameterValue(int_value=1))]


def key(**changes: object) -> str:
    args = {"app_id": "ap-1", "bundle_hash": "b1", "class_def": CLASS, "parameters": PARAMS,
            "options": common_pb2.ServiceOptions(enable_memory_snapshot=True), **changes}
    return snapshot_key(**args)  # type: ignore[arg-type]


def test_key_covers_code_image_parameters_and_app() -> None:
    base = key()
    assert key() == base
    assert key(bundle_hash="b2") != base
    assert key(app_id="ap-2") != base
    other_params = [common_pb2.NamedParameter(name="size", value=common_pb2.ParameterValue(int_value=2))]
    assert key(parameters=other_params) != base
    imaged = common_pb2.ClassDef()
    imaged.CopyFrom(CLASS)
    imaged.options.image.pip_packages.append("numpy")
    assert key(class_def=imaged) != base


def test_key_ignores_secrets_and_autoscaling() -> None:
    options = common_pb2.ServiceOptions(enable_memory_snapshot=True)
    options.secrets.add(name="db")
    options.autoscaler.max_containers = 9
    assert key(options=options) == key()


def test_one_take_per_node_and_key_then_restore() -> None:
    book = SnapshotBook()
    assert book.mode_for("n1", "k") == StartMode.TAKE
    book.taking[("n1", "k")] = "ct-1"
    assert book.mode_for("n1", "k") == StartMode.COLD  # another container is dumping this key here
    assert book.mode_for("n2", "k") == StartMode.TAKE  # images are per node
    del book.taking[("n1", "k")]
    book.image_taken("n1", common_pb2.SnapshotImage(snapshot_key="k", app_id="ap-1"))
    assert book.mode_for("n1", "k") == StartMode.RESTORE


def test_repeated_failures_mark_the_key_broken_until_forgotten() -> None:
    book = SnapshotBook()
    book.image_taken("n1", common_pb2.SnapshotImage(snapshot_key="k"))
    for _ in range(MAX_FAILURES - 1):
        book.failed("k", "restore failed")
    assert book.mode_for("n1", "k") == StartMode.RESTORE
    book.failed("k", "restore failed")
    assert book.mode_for("n1", "k") == StartMode.COLD
    book.forget(["k"])
    assert book.mode_for("n1", "k") == StartMode.TAKE
