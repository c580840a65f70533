"""The registry and snapshots in the pure core: deploys, redeploys retiring services, stopping
apps, ephemeral apps, binding, and memory snapshot phases."""

from __future__ import annotations

import pytest

from corral_protocol.v1 import common_pb2, control_pb2, node_pb2
from corral_scheduler import events as ev
from corral_scheduler.errors import InvalidArgument, NotFound
from corral_scheduler.lifecycle import ContainerState
from corral_scheduler.registry import validate_app
from corral_scheduler.snapshot_keys import MAX_FAILURES, StartMode
from corral_scheduler.testing import Harness, class_def

S = common_pb2


def int_param(name: str, default: int | None = None) -> common_pb2.ParameterSpec:
    spec = common_pb2.ParameterSpec(name=name, type=S.PARAMETER_TYPE_INT)
    if default is not None:
        spec.has_default = True
        spec.default.int_value = default
    return spec


def named(name: str, value: int) -> common_pb2.NamedParameter:
    return common_pb2.NamedParameter(name=name, value=common_pb2.ParameterValue(int_value=value))


def test_a_redeploy_retires_the_old_services_and_their_containers_drain() -> None:
    h = Harness()
    node = h.add_node()
    app = h.deploy(class_def(max_containers=1))
    old = h.bind(app)
    running, queued = h.invoke(old), h.invoke(old)
    (container,) = h.live_containers(old)
    h.bring_up(container)
    h.deploy(class_def(max_containers=1), app_id=app, version=2, bundle_hash="bundle-2")
    assert h.service(old).retired
    assert h.result(queued).status == S.RESULT_STATUS_CANCELLED  # type: ignore[union-attr]
    assert h.container(container).state == ContainerState.DRAINING and h.worker(container).shutdown
    assert h.nodes[node].deleted == [node_pb2.DeleteSnapshots(app_id=app, keep_bundle_hash="bundle-2")]
    h.output(container, running)  # the running input still finishes while it drains
    assert h.result(running).status == S.RESULT_STATUS_SUCCESS  # type: ignore[union-attr]
    with pytest.raises(NotFound, match="is gone"):
        h.invoke(old)
    assert h.bind(app) != old


def test_a_retired_service_is_forgotten_once_its_containers_are_gone() -> None:
    h = Harness()
    h.add_node()
    app = h.deploy(class_def(min_containers=1))
    (old,) = h.core.registry.services
    (container,) = h.live_containers(old)
    h.deploy(class_def(), app_id=app, version=2)
    h.exit(container, -9)
    h.tick()
    assert old not in h.core.registry.services


def test_a_redeploy_keeps_the_app_created_at() -> None:
    h = Harness()
    app = h.deploy(class_def())
    created = h.core.registry.apps[app].created_at
    h.clock.now += 100
    h.deploy(class_def(), app_id=app, version=2)
    assert h.core.registry.apps[app].created_at == created and h.core.registry.apps[app].version == 2


def test_stopping_a_deployed_app_marks_it_in_the_store_and_deletes_its_snapshots() -> None:
    h = Harness()
    node = h.add_node()
    app = h.deploy(class_def(), name="shop")
    h.handle(ev.AppStopRequested(app, "app 'shop' was stopped"))
    assert h.stopped_apps == [app]
    assert h.nodes[node].deleted == [node_pb2.DeleteSnapshots(app_id=app)]
    with pytest.raises(NotFound):
        h.core.registry.find_app("shop")


def test_an_ephemeral_app_without_heartbeats_is_stopped_and_one_with_them_lives() -> None:
    h = Harness()
    quiet = h.deploy(class_def(), name="a", ephemeral=True)
    alive = h.deploy(class_def(), name="b", ephemeral=True)
    for _ in range(4):
        h.tick(20)
        h.handle(ev.AppHeartbeat(alive))
    assert h.core.registry.apps[quiet].stopped and not h.core.registry.apps[alive].stopped
    assert h.stopped_apps == []  # ephemeral apps are not in the store
    with pytest.raises(NotFound):
        h.handle(ev.AppHeartbeat(quiet))


def test_the_same_parameters_bind_the_same_service() -> None:
    h = Harness()
    app = h.deploy(class_def(parameters=[int_param("size", 1)]))
    assert h.bind(app, parameters=[named("size", 1)]) == h.bind(app)  # the default filled in
    assert h.bind(app, parameters=[named("size", 2)]) != h.bind(app)


def test_binding_checks_parameters() -> None:
    h = Harness()
    app = h.deploy(class_def(parameters=[int_param("size")]))
    with pytest.raises(InvalidArgument, match="missing required parameter 'size'"):
        h.bind(app)
    with pytest.raises(InvalidArgument, match="unknown parameter"):
        h.bind(app, parameters=[named("size", 1), named("other", 1)])
    wrong = common_pb2.NamedParameter(name="size", value=common_pb2.ParameterValue(string_value="x"))
    with pytest.raises(InvalidArgument, match="wrong type"):
        h.bind(app, parameters=[wrong])
    with pytest.raises(NotFound, match="class 'Nope'"):
        h.bind(app, "Nope", parameters=[named("size", 1)])


def test_batching_needs_a_class_with_one_method() -> None:
    h = Harness()
    app = h.deploy(class_def(methods=("a", "b")))
    override = common_pb2.ServiceOptions(batching=common_pb2.BatchingConfig(max_batch_size=4))
    with pytest.raises(InvalidArgument, match="exactly one method"):
        h.bind(app, override=override)


def test_a_warm_class_with_required_parameters_starts_nothing_at_deploy() -> None:
    h = Harness()
    node = h.add_node()
    h.deploy(class_def(min_containers=1, parameters=[int_param("size")]))
    assert h.started_on(node) == []


def test_app_validation() -> None:
    request = control_pb2.CreateAppRequest(name="ok", kind=control_pb2.APP_KIND_DEPLOYED, bundle_hash="b")
    with pytest.raises(InvalidArgument, match="at least one class"):
        validate_app(request)
    request.classes.extend([class_def("A"), class_def("A")])
    with pytest.raises(InvalidArgument, match="unique"):
        validate_app(request)
    request.ClearField("classes")
    request.classes.append(class_def("A"))
    request.name = "no spaces"
    with pytest.raises(InvalidArgument, match="app name"):
        validate_app(request)


# Memory snapshots ---------------------------------------------------------------------------------


def snapshotting(h: Harness) -> tuple[str, str]:
    node = h.add_node(snapshots=True)
    return h.bind(h.deploy(class_def(snapshot=True, max_containers=3))), node


def test_the_first_container_takes_the_snapshot_through_its_phases() -> None:
    h = Harness()
    service, node = snapshotting(h)
    h.invoke(service)
    (container,) = h.live_containers(service)
    start = h.nodes[node].started[0]
    assert start.take_snapshot and start.pre_snapshot_token
    init = h.connect(container)
    assert init.take_snapshot and init.direct_token == ""  # nothing live goes into the image
    assert h.container(container).state == ContainerState.TAKING
    h.handle(ev.SnapshotReady(container))
    assert h.container(container).state == ContainerState.AT_SNAPSHOT_POINT
    assert h.worker(container).session_closed
    assert h.core.containers.owner_of(start.pre_snapshot_token) is None  # revoked at the snapshot point
    h.worker(container).init = None
    init = h.connect(container)
    assert not init.take_snapshot and init.direct_token
    h.ready(container)
    assert h.container(container).state == ContainerState.READY


def test_one_container_per_node_and_key_takes_at_a_time() -> None:
    h = Harness()
    service, node = snapshotting(h)
    h.invoke(service)
    h.invoke(service)
    h.backlog()
    first, second = h.nodes[node].started
    assert first.take_snapshot and not second.take_snapshot and not second.snapshot_key


def test_later_containers_restore_the_image() -> None:
    h = Harness()
    service, node = snapshotting(h)
    h.invoke(service)
    (taker,) = h.live_containers(service)
    key = h.container(taker).snapshot_key
    image = common_pb2.SnapshotImage(snapshot_key=key, app_id=h.service(service).app_id)
    h.handle(ev.SnapshotTaken(node, node_pb2.SnapshotResult(snapshot_key=key, ok=True, image=image)))
    h.invoke(service)
    h.backlog()
    restoring = next(c for c in h.live_containers(service) if c != taker)
    assert h.container(restoring).state == ContainerState.RESTORING and not h.container(restoring).restored
    assert h.nodes[node].started[-1].snapshot_key == key and not h.nodes[node].started[-1].take_snapshot
    h.connect(restoring)
    assert h.container(restoring).state == ContainerState.STARTING and h.container(restoring).restored


def test_a_failed_restore_falls_back_to_a_cold_start_and_forgets_the_image() -> None:
    h = Harness()
    service, node = snapshotting(h)
    key = h.core.snapshots.key_for(h.service(service))
    h.handle(ev.NodeHeartbeat(node, (common_pb2.SnapshotImage(snapshot_key=key),)))
    h.invoke(service)
    (container,) = h.live_containers(service)
    assert h.container(container).state == ContainerState.RESTORING
    h.handle(ev.ContainerStarted(node, container, 7, snapshot_error="pages file truncated"))
    assert h.container(container).state == ContainerState.PLACED
    assert h.container(container).start_mode == StartMode.COLD
    assert h.core.snapshots.book.failures[key] == 1 and key not in h.core.nodes.nodes[node].capacity.snapshot_keys


def test_a_taking_container_that_dies_is_a_snapshot_failure_not_an_init_failure() -> None:
    h = Harness()
    service, _ = snapshotting(h)
    call = h.invoke(service)
    key = h.core.snapshots.key_for(h.service(service))
    for _ in range(MAX_FAILURES):
        (container,) = h.live_containers(service)
        assert h.container(container).start_mode == StartMode.TAKE
        h.connect(container)
        h.exit(container, -11, "criu dump failed")
        assert h.result(call) is None
    assert key in h.core.snapshots.book.broken
    (cold,) = h.live_containers(service)
    assert h.container(cold).start_mode == StartMode.COLD


def test_a_node_without_criu_starts_snapshot_classes_cold() -> None:
    h = Harness()
    node = h.add_node(snapshots=False)
    service = h.bind(h.deploy(class_def(snapshot=True)))
    h.invoke(service)
    assert not h.nodes[node].started[0].take_snapshot
    (container,) = h.live_containers(service)
    assert h.container(container).start_mode is None


def test_deleting_snapshots_by_prefix() -> None:
    h = Harness()
    node = h.add_node(snapshots=True)
    images = tuple(common_pb2.SnapshotImage(snapshot_key=k, app_id="ap-x") for k in ("abc1", "abd2"))
    h.handle(ev.NodeHeartbeat(node, images))
    with pytest.raises(NotFound, match="several"):
        h.core.snapshots.select(control_pb2.DeleteSnapshotsRequest(snapshot_keys=["ab"]))
    keys = h.core.snapshots.select(control_pb2.DeleteSnapshotsRequest(snapshot_keys=["abc"]))
    assert keys == ["abc1"]
    h.handle(ev.SnapshotsDeleted(tuple(keys)))
    assert h.nodes[node].deleted == [node_pb2.DeleteSnapshots(snapshot_keys=["abc1"])]
    assert h.core.nodes.nodes[node].capacity.snapshot_keys == {"abd2"}
    assert h.core.snapshots.select(control_pb2.DeleteSnapshotsRequest(all=True)) == ["abd2"]
