"""`corral node cordon`, `uncordon` and `drain`: taking a node out of service, and back."""

from __future__ import annotations

import argparse
import time
from typing import Any

from corral._client import default_client
from corral_protocol import DEFAULT_DRAIN_TIMEOUT_S
from corral_protocol.v1 import control_pb2

# After a drain's timeout its containers are killed; their exits take a moment to be reported.
_EXIT_REPORT_S = 30.0
_POLL_S = 0.5


def node_state(node: control_pb2.NodeInfo) -> str:
    """`ready`, `cordoned`, `draining`, `lost` or `joining`."""
    return control_pb2.NodeState.Name(node.state).removeprefix("NODE_STATE_").lower()


def add_node_commands(node: Any) -> None:
    """The commands under `corral node` (`node` is its sub-parsers)."""
    p = node.add_parser("cordon", help="place no new containers on a node; those it runs keep serving")
    p.add_argument("name", help="the node's name or id")
    p.set_defaults(handler=cmd_node_cordon)
    p = node.add_parser("uncordon", help="let a cordoned or draining node take new containers again")
    p.add_argument("name", help="the node's name or id")
    p.set_defaults(handler=cmd_node_uncordon)
    p = node.add_parser("drain", help="cordon a node and move its containers to other nodes gracefully")
    p.add_argument("name", help="the node's name or id")
    p.add_argument("--timeout", type=float, default=DEFAULT_DRAIN_TIMEOUT_S, metavar="SECONDS",
                   help=f"containers still running after this long are killed (default {DEFAULT_DRAIN_TIMEOUT_S:g})")
    p.add_argument("--no-wait", action="store_true", help="return at once instead of waiting until the node is drained")
    p.set_defaults(handler=cmd_node_drain)


def cmd_node_cordon(args: argparse.Namespace) -> int:
    client = default_client()
    node = client.call(client.stub.CordonNode, control_pb2.CordonNodeRequest(node=args.name)).node
    print(f"Node {node.name} cordoned ({node_state(node)}): no new containers go there; its {node.containers} container(s) keep serving.")
    return 0


def cmd_node_uncordon(args: argparse.Namespace) -> int:
    client = default_client()
    node = client.call(client.stub.UncordonNode, control_pb2.UncordonNodeRequest(node=args.name)).node
    print(f"Node {node.name} uncordoned ({node_state(node)}).")
    return 0


def cmd_node_drain(args: argparse.Namespace) -> int:
    client = default_client()
    node = client.call(client.stub.DrainNode, control_pb2.DrainNodeRequest(node=args.name, timeout_s=args.timeout)).node
    print(f"Draining node {node.name}: {node.containers} container(s) move elsewhere (timeout {args.timeout:g} s).", flush=True)
    deadline = time.monotonic() + args.timeout + _EXIT_REPORT_S
    while not args.no_wait and node.state == control_pb2.NODE_STATE_DRAINING and time.monotonic() < deadline:
        time.sleep(_POLL_S)
        nodes = client.call(client.stub.ListNodes, control_pb2.ListNodesRequest()).nodes
        current = next((n for n in nodes if n.node_id == node.node_id), None)
        if current is None:
            break
        node = current
    if args.no_wait or node.state == control_pb2.NODE_STATE_DRAINING:
        return 0 if args.no_wait else _still_draining(node)
    if node.state == control_pb2.NODE_STATE_CORDONED:
        print(f"Node {node.name} drained; it stays cordoned until `corral node uncordon {node.name}`.")
        return 0
    print(f"Node {node.name} is {node_state(node)}{f' ({node.state_reason})' if node.state_reason else ''}.")
    return 1


def _still_draining(node: control_pb2.NodeInfo) -> int:
    print(f"Node {node.name} is still draining ({node.containers} container(s) left).")
    return 1
