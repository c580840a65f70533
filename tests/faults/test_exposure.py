"""Names that clients would normalise away or percent-encode are refused, by the SDK early and by
the control plane for any client; nothing secret travels on a command line."""

from __future__ import annotations

import pytest
from faults_helpers import client_for

import corral
from conftest import Cluster
from corral.exception import InvalidError
from corral_protocol.v1 import common_pb2, control_pb2

BAD = ["名前", ".", "..", "a/b"]


@pytest.mark.parametrize("name", BAD)
def test_the_sdk_refuses_bad_app_class_and_secret_names(name: str) -> None:
    with pytest.raises(InvalidError, match="app name .* is not allowed"):
        corral.App(name)
    with pytest.raises(InvalidError, match="secret name .* is not allowed"):
        corral.Secret.from_name(name)


def test_the_sdk_refuses_a_non_ascii_class_name() -> None:
    app = corral.App("names")
    namespace: dict[str, object] = {}
    exec("class 名前:\n    pass\n", namespace)
    with pytest.raises(InvalidError, match="class name '名前' is not allowed"):
        app.cls()(namespace["名前"])  # type: ignore[arg-type]


@pytest.mark.parametrize("name", BAD)
@pytest.mark.parametrize("kind", [control_pb2.APP_KIND_DEPLOYED, control_pb2.APP_KIND_EPHEMERAL])
def test_the_control_plane_refuses_bad_app_names_from_any_client(cluster: Cluster, name: str, kind: int) -> None:
    client = client_for(cluster)
    try:
        with pytest.raises(InvalidError, match="app name .* is not allowed"):
            client.call(client.stub.CreateApp, control_pb2.CreateAppRequest(name=name, kind=kind))  # type: ignore[arg-type]
        method = common_pb2.MethodDef(name="f")
        with pytest.raises(InvalidError, match="class name .* is not allowed"):
            client.call(client.stub.CreateApp, control_pb2.CreateAppRequest(
                name="fine", kind=control_pb2.APP_KIND_EPHEMERAL, classes=[common_pb2.ClassDef(name=name, module="m", methods=[method])],
            ))
        with pytest.raises(InvalidError, match="secret name .* is not allowed"):
            client.call(client.stub.SetSecret, control_pb2.SetSecretRequest(name=name, values={"K": "v"}))
    finally:
        client.close()


def test_corral_deploy_refuses_a_bad_name_with_the_rule(cluster: Cluster) -> None:
    from conftest import APPS

    result = cluster.corral("deploy", str(APPS / "faults_app.py"), "--name", "..")
    assert result.returncode != 0
    assert "app name '..' is not allowed" in result.stdout + result.stderr
