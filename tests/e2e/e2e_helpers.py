"""Helpers shared by the deploy, CLI, scaling and lifecycle end-to-end tests."""

from __future__ import annotations

import os
import re
from pathlib import Path

import corral
from conftest import APPS, Cluster
from corral_protocol.v1 import control_pb2


def client_for(cluster: Cluster) -> corral.Client:
    """An explicit client: the test process's default client is cached and may belong to another cluster."""
    return corral.Client(cluster.url, cluster.token)


def deploy(cluster: Cluster, file: str, name: str) -> str:
    result = cluster.corral("deploy", str(APPS / file), "--name", name)
    assert result.returncode == 0, f"corral deploy failed:\n{result.stdout}\n{result.stderr}"
    assert f"Deployed app {name!r}" in result.stdout, result.stdout
    return result.stdout


def app_ids(client: corral.Client, name: str) -> list[str]:
    apps = client.call(client.stub.ListApps, control_pb2.ListAppsRequest()).apps
    return [a.app_id for a in apps if a.name == name]


def containers(client: corral.Client, app_name: str, class_name: str | None = None, live_only: bool = True) -> list[control_pb2.ContainerInfo]:
    live = {control_pb2.CONTAINER_STATE_PENDING, control_pb2.CONTAINER_STATE_STARTING, control_pb2.CONTAINER_STATE_READY}
    found = client.call(client.stub.ListContainers, control_pb2.ListContainersRequest()).containers
    return [
        c for c in found
        if c.app_name == app_name and (class_name is None or c.class_name == class_name) and (not live_only or c.state in live)
    ]


def table_rows(output: str) -> list[list[str]]:
    """The rows of a CLI table (header excluded), split on runs of two or more spaces."""
    lines = [line for line in output.splitlines() if line.strip()]
    return [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]


def pids_with(marker: str) -> list[int]:
    """Processes (other than this one) whose command line or environment mentions `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            text = (entry / "cmdline").read_bytes() + b"\0" + (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and marker.encode() in text:
            found.append(int(entry.name))
    return found


def parameter(container: control_pb2.ContainerInfo, name: str) -> object:
    """A container's bound parameter value, by name."""
    for p in container.parameters:
        if p.name == name:
            return getattr(p.value, p.value.WhichOneof("kind"))
    raise KeyError(name)
