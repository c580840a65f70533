"""End-to-end: how failures reach the caller (user exceptions, timeouts, crashes, bad parameters,
unknown names, failing @enter hooks, incompatible protocol versions). Real `corral up`, real gRPC."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

import corral
import corral._client as corral_client
import errors_app
from conftest import Cluster, read_events, wait_for
from corral.exception import (
    ContainerExitedError,
    FunctionTimeoutError,
    InitError,
    InvalidError,
    NotFoundError,
    RemoteError,
    RemoteTraceback,
    VersionMismatchError,
)
from corral_protocol.v1 import common_pb2, control_pb2, control_pb2_grpc, node_pb2, node_pb2_grpc
from e2e_helpers import pids_with
from errors_app import ErrorsBadEnter, ErrorsCrasher, ErrorsParams, ErrorsRaiser, ErrorsRetriedCrasher, ErrorsSlow

APP_FILE = Path(errors_app.__file__).name
DEPLOYED = "errors-deployed"


def line_of(marker: str) -> int:
    """The line number of the source line of errors_app.py carrying `marker`."""
    lines = Path(errors_app.__file__).read_text().splitlines()
    return next(i for i, line in enumerate(lines, start=1) if marker in line)


@pytest.fixture(scope="module")
def running(cluster: Cluster) -> Iterator[corral.App]:
    with errors_app.app.run():
        yield errors_app.app


@pytest.fixture(scope="module")
def deployed(cluster: Cluster) -> Iterator[str]:
    client = corral.Client(cluster.url, cluster.token)
    errors_app.app.deploy(DEPLOYED, client=client)
    try:
        yield DEPLOYED
    finally:
        client.call(client.stub.StopApp, control_pb2.StopAppRequest(app=DEPLOYED), timeout=60)
        client.close()


class RecordingClient(corral.Client):
    """A client that records the request type of every unary RPC it makes."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(url, token)
        self.requests: list[str] = []

    def call(self, rpc, request, timeout=None):  # type: ignore[no-untyped-def,override]
        self.requests.append(type(request).__name__)
        return super().call(rpc, request, timeout)


# User exceptions -----------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_builtin_exception_keeps_type_and_remote_traceback(running: corral.App) -> None:
    with pytest.raises(ValueError, match="builtin failure: abc") as info:
        ErrorsRaiser().raise_builtin.remote("abc")
    assert type(info.value) is ValueError
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert f'{APP_FILE}", line {line_of("LINE-RAISE-BUILTIN")}, in raise_builtin' in cause.traceback
    assert "ValueError: builtin failure: abc" in cause.traceback
    # The service still works after a user exception.
    assert ErrorsRaiser().ok.remote(21) == 42


@pytest.mark.timeout(120)
def test_custom_exception_class_of_the_app_is_reraised(running: corral.App) -> None:
    with pytest.raises(errors_app.ErrorsCustomError, match="custom failure: xyz") as info:
        ErrorsRaiser().raise_custom.remote("xyz")
    assert type(info.value) is errors_app.ErrorsCustomError
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert f'{APP_FILE}", line {line_of("LINE-RAISE-CUSTOM")}, in raise_custom' in cause.traceback
    assert f'{APP_FILE}", line {line_of("LINE-RAISE-CUSTOM")}' in str(cause)


@pytest.mark.timeout(120)
def test_custom_exception_through_spawn_and_aio(running: corral.App) -> None:
    call = ErrorsRaiser().raise_custom.spawn("spawned")
    with pytest.raises(errors_app.ErrorsCustomError, match="custom failure: spawned") as info:
        call.get(timeout=60)
    assert isinstance(info.value.__cause__, RemoteTraceback)

    async def aio() -> None:
        await ErrorsRaiser().raise_custom.remote.aio("aio")

    with pytest.raises(errors_app.ErrorsCustomError, match="custom failure: aio"):
        asyncio.run(aio())


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("method", "marker", "type_name", "text"),
    [
        ("raise_unpicklable", "LINE-RAISE-UNPICKLABLE", "ErrorsUnpicklableError", "unpicklable failure: lock"),
        ("raise_generator", "LINE-RAISE-GENERATOR", "ErrorsGeneratorError", "generator failure: lock"),
    ],
)
def test_unpicklable_exception_becomes_remote_error(
    running: corral.App, method: str, marker: str, type_name: str, text: str
) -> None:
    with pytest.raises(RemoteError) as info:
        getattr(ErrorsRaiser(), method).remote("lock")
    err = info.value
    assert type_name in err.exception_type
    assert text in str(err)
    assert f'{APP_FILE}", line {line_of(marker)}, in {method}' in err.traceback
    assert err.traceback in str(err)


@pytest.mark.timeout(120)
def test_exception_that_cannot_be_recreated_becomes_remote_error(running: corral.App) -> None:
    with pytest.raises(RemoteError) as info:
        errors_app.ErrorsMore().raise_two_arg.remote("x")
    assert "ErrorsTwoArgError" in info.value.exception_type
    assert "code 7: two-arg failure: x" in str(info.value)
    assert f'{APP_FILE}", line {line_of("LINE-RAISE-TWO-ARG")}, in raise_two_arg' in info.value.traceback


@pytest.mark.timeout(120)
def test_async_method_exception_keeps_type(running: corral.App) -> None:
    with pytest.raises(KeyError, match="async failure: y") as info:
        errors_app.ErrorsMore().raise_async.remote("y")
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert f'{APP_FILE}", line {line_of("LINE-RAISE-ASYNC")}, in raise_async' in info.value.__cause__.traceback


@pytest.mark.timeout(120)
def test_chained_exception_traceback_shows_the_chain(running: corral.App) -> None:
    with pytest.raises(errors_app.ErrorsCustomError, match="chained failure: z") as info:
        errors_app.ErrorsMore().raise_chained.remote("z")
    text = info.value.__cause__.traceback  # type: ignore[union-attr]
    assert "KeyError: 'missing'" in text
    assert "direct cause" in text
    assert f'{APP_FILE}", line {line_of("LINE-RAISE-CHAINED")}, in raise_chained' in text


@pytest.mark.timeout(120)
def test_exception_class_unknown_to_the_caller_becomes_remote_error(running: corral.App) -> None:
    assert not hasattr(errors_app, "ErrorsContainerOnlyError")
    with pytest.raises(RemoteError) as info:
        errors_app.ErrorsOdd().raise_container_only.remote()
    assert "ErrorsContainerOnlyError" in info.value.exception_type
    assert "only in the container" in str(info.value)
    assert f'{APP_FILE}", line {line_of("LINE-RAISE-CONTAINER-ONLY")}' in info.value.traceback


@pytest.mark.timeout(120)
def test_unserializable_return_value_is_a_clear_error(running: corral.App) -> None:
    with pytest.raises(TypeError, match="return value of return_lock could not be serialized"):
        errors_app.ErrorsOdd().return_lock.remote()


# Timeouts ------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_timeout_ends_the_input_and_the_service_recovers(running: corral.App) -> None:
    slow = ErrorsSlow()
    first_pid = slow.pid.remote()
    with pytest.raises(FunctionTimeoutError, match="timed out"):
        slow.sleep.remote(30)
    # The container that ran over its timeout is gone; a new one serves the next call.
    wait_for(lambda: not _alive(first_pid), timeout=30, message=f"timed-out container {first_pid} to exit")
    second_pid = slow.pid.remote()
    assert second_pid != first_pid
    assert slow.sleep.remote(0) == "slept"


@pytest.mark.timeout(180)
def test_waiting_with_a_deadline_is_not_a_function_timeout(running: corral.App) -> None:
    from corral.exception import TimeoutError as CorralTimeoutError

    call = ErrorsSlow().sleep.spawn(30)
    with pytest.raises(CorralTimeoutError) as info:
        call.get(timeout=0.1)
    assert not isinstance(info.value, FunctionTimeoutError)
    with pytest.raises(FunctionTimeoutError, match="ErrorsSlow.sleep timed out"):
        call.get(timeout=120)


def _alive(container_id: str) -> bool:
    """Whether a process of this container still runs (zombies not yet reaped count as gone)."""
    return bool(pids_with(f"CORRAL_CONTAINER_ID={container_id}\0"))


# Containers that die ----------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_container_exit_mid_call_is_container_exited_error(running: corral.App) -> None:
    with pytest.raises(ContainerExitedError) as info:
        ErrorsCrasher().die_always.remote()
    assert "exited" in str(info.value)
    assert "die_always" in str(info.value)


@pytest.mark.timeout(120)
def test_a_crash_in_c_code_names_itself_in_the_error(running: corral.App) -> None:
    """faulthandler writes to the node's stderr pipe directly (not through the worker's fd capture,
    whose reader cannot run while the crashing thread holds the GIL): the tail shows the crash."""
    with pytest.raises(ContainerExitedError) as info:
        ErrorsCrasher().segfault.remote()
    assert "Fatal Python error: Segmentation fault" in str(info.value), info.value
    assert "in segfault" in str(info.value), info.value


@pytest.mark.timeout(120)
def test_container_exit_without_retries_fails_once(running: corral.App, shared_dir: Path) -> None:
    marker = shared_dir / "no-retry-marker"
    with pytest.raises(ContainerExitedError, match="exited"):
        ErrorsCrasher().die_once.remote(str(marker))
    assert len(marker.read_text().split()) == 1
    # Now the marker exists: the next call on a new container succeeds.
    assert ErrorsCrasher().die_once.remote(str(marker))


@pytest.mark.timeout(120)
def test_retries_int_runs_the_input_again(running: corral.App, shared_dir: Path) -> None:
    marker = shared_dir / "retry-int-marker"
    pid = ErrorsRetriedCrasher().die_once.remote(str(marker))
    died = marker.read_text().split()
    assert len(died) == 1, "the first attempt ran exactly once"
    assert pid != died[0], "the retry ran in a new container"


@pytest.mark.timeout(120)
def test_retries_policy_via_with_options(running: corral.App, shared_dir: Path) -> None:
    marker = shared_dir / "retry-policy-marker"
    Retrying = ErrorsCrasher.with_options(retries=corral.Retries(max_retries=1, initial_delay=0.1))
    pid = Retrying().die_once.remote(str(marker))
    died = marker.read_text().split()
    assert len(died) == 1
    assert pid != died[0]


@pytest.mark.timeout(120)
def test_retries_exhausted_is_container_exited_error(running: corral.App, shared_dir: Path) -> None:
    marker = shared_dir / "exhausted-marker"
    with pytest.raises(ContainerExitedError, match="exited"):
        errors_app.ErrorsAlwaysCrasher().die_counted.remote(str(marker))
    attempts = marker.read_text().split()
    assert len(attempts) == 2, "one attempt plus one retry"
    assert len(set(attempts)) == 2, "each attempt ran in its own container"


# Parameters ------------------------------------------------------------------------------------


def _no_rpc(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    made: list[str] = []

    def refuse(self, rpc, request, timeout=None):  # type: ignore[no-untyped-def]
        made.append(type(request).__name__)
        raise AssertionError(f"an RPC was made: {type(request).__name__}")

    async def refuse_aio(self, rpc_name, request, timeout=None):  # type: ignore[no-untyped-def]
        made.append(rpc_name)
        raise AssertionError(f"an RPC was made: {rpc_name}")

    def no_client():  # type: ignore[no-untyped-def]
        made.append("default_client")
        raise AssertionError("a client was made")

    monkeypatch.setattr(corral_client.Client, "call", refuse)
    monkeypatch.setattr(corral_client.Client, "call_aio", refuse_aio)
    monkeypatch.setattr(corral_client, "default_client", no_client)
    monkeypatch.setattr("corral.cls.default_client", no_client)
    monkeypatch.setattr("corral.app.default_client", no_client)
    return made


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "missing required parameter.*name"),
        ({"count": 3}, "missing required parameter.*name"),
        ({"name": "a", "bogus": 1}, "unknown parameter.*bogus"),
        ({"name": 5}, "'name' expects str"),
        ({"name": "a", "count": "3"}, "'count' expects int"),
        ({"name": "a", "count": True}, "'count' expects int"),
        ({"name": "a", "flag": 1}, "'flag' expects bool"),
        ({"name": "a", "count": 2**70}, "64 bits"),
    ],
)
def test_bad_parameters_raise_before_any_rpc(monkeypatch: pytest.MonkeyPatch, kwargs: dict, match: str) -> None:
    made = _no_rpc(monkeypatch)
    with pytest.raises(InvalidError, match=match):
        ErrorsParams(**kwargs)
    with pytest.raises(InvalidError):
        ErrorsParams("positional")
    assert made == []


@pytest.mark.timeout(120)
def test_bad_parameters_inside_a_running_app_create_nothing(
    running: corral.App, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = running.running.client  # type: ignore[union-attr]
    app_id = running.running.app_id  # type: ignore[union-attr]

    def params_containers() -> list[str]:
        listing = client.call(client.stub.ListContainers, control_pb2.ListContainersRequest(app_id=app_id))
        return [c.container_id for c in listing.containers if c.class_name == "ErrorsParams"]

    assert params_containers() == []
    made = _no_rpc(monkeypatch)
    for kwargs in ({}, {"name": "a", "extra": 1}, {"name": b"bytes"}):
        with pytest.raises(InvalidError):
            ErrorsParams(**kwargs).describe.remote()
    assert made == []
    monkeypatch.undo()
    assert params_containers() == []
    assert ErrorsParams(name="good", count=2).describe.remote() == "good:2:False"


@pytest.mark.timeout(120)
def test_bad_parameters_via_from_name_fail_before_binding(cluster: Cluster, deployed: str) -> None:
    client = RecordingClient(cluster.url, cluster.token)
    try:
        Params = corral.Cls.from_name(deployed, "ErrorsParams", client=client)
        for kwargs, match in (
            ({}, "missing required parameter.*name"),
            ({"name": "a", "bogus": 1}, "unknown parameter.*bogus"),
            ({"name": 7}, "'name' expects str"),
        ):
            with pytest.raises(InvalidError, match=match):
                Params(**kwargs).describe.remote()
        # The class was looked up (that is how its schema is known), but nothing was bound or invoked.
        assert set(client.requests) == {"LookupClassRequest"}
        assert Params(name="remote").describe.remote() == "remote:1:False"
        assert "BindServiceRequest" in client.requests
    finally:
        client.close()


# Unknown names ---------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_unknown_app_is_not_found(cluster: Cluster) -> None:
    Missing = corral.Cls.from_name("errors-no-such-app", "ErrorsRaiser")
    with pytest.raises(NotFoundError, match="errors-no-such-app"):
        Missing().ok.remote(1)


@pytest.mark.timeout(60)
def test_unknown_class_of_deployed_app_is_not_found(cluster: Cluster, deployed: str) -> None:
    Missing = corral.Cls.from_name(deployed, "ErrorsNoSuchClass")
    with pytest.raises(NotFoundError, match="ErrorsNoSuchClass") as info:
        Missing().ok.remote(1)
    assert deployed in str(info.value)


@pytest.mark.timeout(120)
def test_unknown_method_via_from_name_is_not_found(cluster: Cluster, deployed: str) -> None:
    Raiser = corral.Cls.from_name(deployed, "ErrorsRaiser")
    with pytest.raises(NotFoundError, match="no_such_method"):
        Raiser().no_such_method.remote(1)
    with pytest.raises(NotFoundError, match="no_such_method"):
        Raiser().no_such_method.spawn(1)
    # The deployed class itself works.
    assert Raiser().ok.remote(5) == 10


@pytest.mark.timeout(60)
def test_unknown_method_on_the_server_is_not_found(cluster: Cluster, deployed: str) -> None:
    """A client that skips the SDK's own check still gets NOT_FOUND from the server."""
    client = corral.Client(cluster.url, cluster.token)
    try:
        lookup = client.call(
            client.stub.LookupClass, control_pb2.LookupClassRequest(app_name=deployed, class_name="ErrorsRaiser")
        )
        bound = client.call(
            client.stub.BindService, control_pb2.BindServiceRequest(app_id=lookup.app_id, class_name="ErrorsRaiser")
        )
        with pytest.raises(NotFoundError, match="nope"):
            client.call(client.stub.Invoke, control_pb2.InvokeRequest(
                service_id=bound.service_id, method="nope", args=common_pb2.Payload(format=common_pb2.PAYLOAD_FORMAT_JSON), wait=True,
            ))
        # A payload must name its format: unset (proto3's default) is never unpickled.
        with pytest.raises(InvalidError, match="payload format is unset"):
            client.call(client.stub.Invoke, control_pb2.InvokeRequest(service_id=bound.service_id, method="nope", wait=True))
    finally:
        client.close()


# Failing @enter ---------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_enter_failure_is_init_error_without_a_tight_restart_loop(running: corral.App, events: Path) -> None:
    bad = ErrorsBadEnter(events=str(events))
    with pytest.raises(InitError) as info:
        bad.work.remote()
    message = str(info.value)
    assert "enter hook exploded" in message
    assert "RuntimeError" in message
    assert "Traceback" in message
    assert f'{APP_FILE}", line {line_of("LINE-RAISE-ENTER")}, in setup' in message

    # Keep calling for a few seconds: every call fails, and containers are not restarted in a loop.
    failures = 1
    window_end = time.monotonic() + 3
    while time.monotonic() < window_end:
        with pytest.raises(InitError, match="enter hook exploded"):
            bad.work.remote()
        failures += 1
    enters = [e for e in read_events(events) if e.startswith("enter")]
    assert failures >= 2
    assert 1 <= len(enters) <= 4, enters

    # Spawned calls fail the same way.
    with pytest.raises(InitError, match="enter hook exploded"):
        bad.work.spawn().get(timeout=120)

    # Exit hooks never ran, and no input ran.
    pids = {e.split("pid=")[1] for e in read_events(events) if "pid=" in e}
    wait_for(lambda: not any(_alive(p) for p in pids), timeout=30, message="failed containers to exit")
    lines = read_events(events)
    assert not [e for e in lines if e.startswith("exit")], lines
    assert not [e for e in lines if e.startswith("work")], lines


@pytest.mark.timeout(180)
def test_enter_failure_fails_every_pending_call(running: corral.App, events: Path) -> None:
    bad = ErrorsBadEnter(events=str(events))
    calls = [bad.work.spawn() for _ in range(3)]
    for call in calls:
        with pytest.raises(InitError, match="enter hook exploded"):
            call.get(timeout=120)
    pids = {e.split("pid=")[1] for e in read_events(events) if "pid=" in e}
    wait_for(lambda: not any(_alive(p) for p in pids), timeout=30, message="failed containers to exit")
    lines = read_events(events)
    assert 1 <= len([e for e in lines if e.startswith("enter")]) <= 3, lines
    assert not [e for e in lines if not e.startswith("enter")], lines


# Protocol version ----------------------------------------------------------------------------------


def _target(cluster: Cluster) -> str:
    return cluster.url.split("://", 1)[1]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("version", ["999", "0", "", None])
def test_incompatible_protocol_version_is_failed_precondition(cluster: Cluster, version: str | None) -> None:
    metadata = [("authorization", f"Bearer {cluster.token}")]
    if version is not None:
        metadata.append(("corral-protocol-version", version))
    with grpc.insecure_channel(_target(cluster)) as channel:
        stub = control_pb2_grpc.ControlServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ListApps(control_pb2.ListAppsRequest(), metadata=metadata, timeout=10)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "protocol version" in info.value.details()

        # Streaming RPCs answer the same way, promptly.
        node_stub = node_pb2_grpc.NodeServiceStub(channel)
        session = node_stub.NodeSession(iter([node_pb2.NodeSessionRequest(node_id="nd-x")]), metadata=metadata, timeout=10)
        with pytest.raises(grpc.RpcError) as info:
            next(session)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "protocol version" in info.value.details()


@pytest.mark.timeout(60)
def test_right_protocol_version_is_accepted(cluster: Cluster) -> None:
    metadata = [("authorization", f"Bearer {cluster.token}"), ("corral-protocol-version", "1")]
    with grpc.insecure_channel(_target(cluster)) as channel:
        stub = control_pb2_grpc.ControlServiceStub(channel)
        stub.ListApps(control_pb2.ListAppsRequest(), metadata=metadata, timeout=10)


@pytest.mark.timeout(60)
def test_sdk_with_incompatible_version_gets_version_mismatch(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corral_client, "PROTOCOL_VERSION", 999)
    client = corral.Client(cluster.url, cluster.token)
    try:
        with pytest.raises(VersionMismatchError, match="protocol version"):
            corral.Cls.from_name(DEPLOYED, "ErrorsRaiser", client=client)().ok.remote(1)
        with pytest.raises(VersionMismatchError, match="protocol version"):
            asyncio.run(corral.Cls.from_name(DEPLOYED, "ErrorsRaiser", client=client)().ok.remote.aio(1))
        with pytest.raises(VersionMismatchError, match="protocol version"):
            with errors_app.version_app.run(client=client):
                pass  # pragma: no cover
        assert errors_app.version_app.running is None
    finally:
        client.close()


# Scripts ------------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_script_catches_its_own_exception_class(cluster: Cluster) -> None:
    """A class defined in a script run as `__main__` is caught by the script's own `except`."""
    script = Path(errors_app.__file__).with_name("errors_main_script.py")
    done = cluster.python(str(script), timeout=150)
    assert "CAUGHT-OWN-TYPE __main__ main failure: x RemoteTraceback" in done.stdout, done.stdout + done.stderr
    assert "CAUGHT-BUILTIN main builtin failure" in done.stdout, done.stdout + done.stderr


def test_an_enter_hook_that_hangs_past_the_timeout_fails_the_call_with_an_init_error(running: corral.App) -> None:
    from errors_app import ErrorsHangingEnter

    with pytest.raises(InitError, match="did not finish starting"):
        ErrorsHangingEnter().never.remote()


def test_module_level_app_run_fails_in_the_container_instead_of_starting_clusters(cluster: Cluster) -> None:
    script = Path(errors_app.__file__).with_name("module_level_run.py")
    done = cluster.python(str(script), timeout=120)
    assert "INIT-ERROR" in done.stdout and 'if __name__ == "__main__":' in done.stdout, done.stdout + done.stderr
