"""`corral up` never serves plaintext beyond loopback by accident: a non-loopback --host needs TLS
or an explicit --insecure; with --tls-self-signed, clients on the host pin the generated
certificate (from server.json) and plaintext clients are refused. Traffic stays on loopback."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import corral
from conftest import Cluster, free_port, start_cluster
from corral.exception import ConnectionError as CorralConnectionError
from corral_protocol.v1 import control_pb2


def test_corral_up_refuses_a_public_host_without_tls(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "corral.cli", "up", "--host", "0.0.0.0", "--port", str(free_port()), "--http-port", "0"],
        env={"CORRAL_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "--tls-cert" in result.stderr and "--tls-self-signed" in result.stderr and "--insecure" in result.stderr
    assert not (tmp_path / "home" / "server.json").exists()


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("tls") / "home", args=("--tls-self-signed",))
    try:
        yield cluster
    finally:
        cluster.stop()


def test_a_self_signed_server_is_reached_by_pinning_its_certificate(tls_cluster: Cluster) -> None:
    record = json.loads((tls_cluster.home / "server.json").read_text())
    assert record["url"].startswith("grpcs://127.0.0.1:") and record["http_url"].startswith("https://")
    assert Path(record["ca"]) == tls_cluster.home / "tls" / "cert.pem"
    assert (tls_cluster.home / "tls" / "key.pem").stat().st_mode & 0o077 == 0

    # A user's program finds the server through CORRAL_HOME (server.json: URL and pinned certificate).
    program = (
        "import faults_app\n"
        "with faults_app.app.run():\n"
        "    print(faults_app.Payloads().size.remote(b'abc')[1])\n"
    )
    result = tls_cluster.python("-c", program)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3"

    pinned = corral.Client(record["url"], tls_cluster.token, ca=record["ca"])
    try:
        assert pinned.call(pinned.stub.ListNodes, control_pb2.ListNodesRequest()).nodes
    finally:
        pinned.close()


def test_plaintext_and_unpinned_clients_are_refused(tls_cluster: Cluster) -> None:
    record = json.loads((tls_cluster.home / "server.json").read_text())
    plaintext = corral.Client(record["url"].replace("grpcs://", "grpc://"), tls_cluster.token)
    unpinned = corral.Client(record["url"], tls_cluster.token)  # system roots do not know the self-signed cert
    try:
        for client in (plaintext, unpinned):
            with pytest.raises(CorralConnectionError):
                client.call(client.stub.ListNodes, control_pb2.ListNodesRequest(), timeout=10)
    finally:
        plaintext.close()
        unpinned.close()
    with httpx.Client(verify=ssl.create_default_context(cafile=record["ca"]), timeout=30) as https:
        assert https.get(record["http_url"] + "/nothing-here").status_code == 404
    with pytest.raises(httpx.HTTPError):
        httpx.get(record["http_url"].replace("https://", "http://") + "/nothing-here", timeout=10)
