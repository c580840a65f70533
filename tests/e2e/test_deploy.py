"""`corral deploy`, `Cls.from_name` and `with_options`, end to end against a real `corral up`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import pytest

import corral
from conftest import APPS, Cluster, free_port, read_events, start_cluster, wait_for
from corral_protocol.errors import error_reason
from corral_protocol.v1 import common_pb2, control_pb2
from e2e_helpers import app_ids, client_for, containers, deploy


def test_deployed_app_survives_a_restart(fresh_cluster: Cluster, events: Path) -> None:
    deploy(fresh_cluster, "deploy_model.py", "e2e-deploy-restart")
    client = client_for(fresh_cluster)
    Model = corral.Cls.from_name("e2e-deploy-restart", "Model", client=client).with_options(scaledown_window=600)
    model = Model(events=str(events))
    assert model.bump.remote() == 1
    assert model.bump.remote() == 2
    first_pid = model.pid.remote()
    client.close()

    assert fresh_cluster.stop() == 0, fresh_cluster.logs()
    restarted = start_cluster(fresh_cluster.home, fresh_cluster.port)
    try:
        client = client_for(restarted)
        assert app_ids(client, "e2e-deploy-restart"), "the deployed app is gone after the restart"
        Model = corral.Cls.from_name("e2e-deploy-restart", "Model", client=client).with_options(scaledown_window=600)
        model = Model(events=str(events))
        assert model.bump.remote() == 1  # a new container: state does not survive, the deployment does
        assert model.pid.remote() != first_pid
        listed = restarted.corral("app", "list")
        assert listed.returncode == 0, listed.stderr
        assert any("e2e-deploy-restart" in line and "deployed" in line for line in listed.stdout.splitlines()), listed.stdout
        client.close()
    finally:
        assert restarted.stop() == 0, restarted.logs()
    # The first server's shutdown ran the first container's exit hook; the second's ran the second's.
    assert [line.split()[0] for line in read_events(events)] == ["enter", "exit", "enter", "exit"]


def test_redeploy_makes_a_new_version(cluster: Cluster) -> None:
    first = deploy(cluster, "deploy_model.py", "e2e-deploy-versions")
    second = deploy(cluster, "deploy_model.py", "e2e-deploy-versions")
    assert "version 1" in first and "version 2" in second
    client = client_for(cluster)
    assert len(app_ids(client, "e2e-deploy-versions")) == 1
    assert corral.Cls.from_name("e2e-deploy-versions", "Model", client=client)().bump.remote() == 1
    assert cluster.corral("app", "stop", "e2e-deploy-versions").returncode == 0


def test_a_bound_handle_rebinds_after_a_redeploy(cluster: Cluster) -> None:
    """A redeploy retires the bound service; the server says so with ERROR_REASON_SERVICE_GONE (not
    only in words) and the SDK's handle binds the new version by itself."""
    name = "e2e-deploy-rebind"
    deploy(cluster, "deploy_model.py", name)
    client = client_for(cluster)
    # retries=1 keeps the calls on the control plane's path (the direct path needs no retry policy).
    model = corral.Cls.from_name(name, "Model", client=client).with_options(retries=1)()
    assert model.bump.remote() == 1
    looked_up = client.call(client.stub.LookupClass, control_pb2.LookupClassRequest(app_name=name, class_name="Model"))
    old = client.call(client.stub.BindService, control_pb2.BindServiceRequest(app_id=looked_up.app_id, class_name="Model"))

    deploy(cluster, "deploy_model.py", name)
    with pytest.raises(grpc.RpcError) as raised:
        client.stub.Invoke(control_pb2.InvokeRequest(
            service_id=old.service_id, method="bump", args=common_pb2.Payload(format=common_pb2.PAYLOAD_FORMAT_JSON), wait=True,
        ), metadata=client.metadata)
    err = raised.value
    assert isinstance(err, grpc.Call)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(err.trailing_metadata()) == common_pb2.ERROR_REASON_SERVICE_GONE
    assert model.bump.remote() == 1  # the same handle, rebound to the new version's new service
    assert cluster.corral("app", "stop", name).returncode == 0


def test_from_name_in_another_process(cluster: Cluster) -> None:
    deploy(cluster, "deploy_model.py", "e2e-deploy-other")
    script = textwrap.dedent(
        """
        import corral
        Model = corral.Cls.from_name("e2e-deploy-other", "Model").with_options(scaledown_window=60)
        m = Model(tag="x")
        print("counts", m.bump.remote(), m.bump.remote())
        print("other", Model(tag="y").bump.remote())
        """
    )
    result = cluster.python("-c", script)
    assert result.returncode == 0, result.stderr
    assert "counts 1 2" in result.stdout
    assert "other 1" in result.stdout
    assert cluster.corral("app", "stop", "e2e-deploy-other").returncode == 0


def test_from_name_and_with_options_make_no_rpc(tmp_path: Path) -> None:
    """Nothing listens on the port: handles are built without error; the first call fails to connect."""
    env = dict(os.environ, CORRAL_SERVER_URL=f"grpc://127.0.0.1:{free_port()}", CORRAL_TOKEN="not-a-real-token", CORRAL_HOME=str(tmp_path / "home"))
    env["PYTHONPATH"] = os.pathsep.join([str(APPS), env.get("PYTHONPATH", "")])
    script = textwrap.dedent(
        """
        import corral
        Model = corral.Cls.from_name("no-such-app", "Model")
        Tuned = Model.with_options(timeout=5, secrets=[corral.Secret.from_dict({"X": "1"})], scaledown_window=2)
        Tuned = Tuned.with_concurrency(max_inputs=4).with_options(max_containers=3)
        assert Tuned is not Model
        obj = Tuned(tag="t")
        method = obj.bump
        print("handles built")
        try:
            method.remote()
        except corral.exception.ConnectionError as err:
            print("first call:", type(err).__name__)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "handles built" in result.stdout
    assert "first call: ConnectionError" in result.stdout
    assert not (tmp_path / "home").exists(), "a lazy handle must not start an embedded cluster"


def test_unknown_app_raises_not_found_on_first_call(cluster: Cluster) -> None:
    client = client_for(cluster)
    Missing = corral.Cls.from_name("e2e-deploy-never-deployed", "Model", client=client)
    handle = Missing.with_options(timeout=10)()  # still no RPC
    with pytest.raises(corral.exception.NotFoundError):
        handle.bump.remote()


def test_with_options_apply_to_their_own_service(cluster: Cluster) -> None:
    deploy(cluster, "deploy_model.py", "e2e-deploy-options")
    client = client_for(cluster)
    Model = corral.Cls.from_name("e2e-deploy-options", "Model", client=client)
    WithSecret = Model.with_options(secrets=[corral.Secret.from_dict({"E2E_X": "1"})])
    Short = Model.with_options(timeout=1)
    assert WithSecret is not Model and Short is not Model

    assert WithSecret().env.remote("E2E_X") == "1"
    assert Model().env.remote("E2E_X") is None
    assert Short().env.remote("E2E_X") is None
    assert WithSecret().pid.remote() != Model().pid.remote()

    with pytest.raises(corral.exception.FunctionTimeoutError):
        Short().sleep.remote(30)
    assert Model().sleep.remote(1.5) == "slept"  # the original handle keeps the class's 300 s timeout
    assert WithSecret().env.remote("E2E_X") == "1"
    assert cluster.corral("app", "stop", "e2e-deploy-options").returncode == 0
    wait_for(lambda: not containers(client, "e2e-deploy-options"), message="the app's containers to stop")
