"""Helpers of the fault suite: an explicit client, and the containers a class holds."""

from __future__ import annotations

import corral
from conftest import Cluster
from corral_protocol.v1 import control_pb2

LIVE = {control_pb2.CONTAINER_STATE_PENDING, control_pb2.CONTAINER_STATE_STARTING, control_pb2.CONTAINER_STATE_READY}


def client_for(cluster: Cluster) -> corral.Client:
    """An explicit client: the test process's default client is cached and may belong to another cluster."""
    return corral.Client(cluster.url, cluster.token)


def containers(client: corral.Client, app_name: str, class_name: str, live_only: bool = True) -> list[control_pb2.ContainerInfo]:
    """The class's containers (ever started, or only the live ones)."""
    found = client.call(client.stub.ListContainers, control_pb2.ListContainersRequest()).containers
    return [c for c in found if c.app_name == app_name and c.class_name == class_name and (not live_only or c.state in LIVE)]
