"""`corral image list` and `corral image rm`: the image layer caches of every node."""

from __future__ import annotations

import argparse
import time
from typing import Any

from corral._cli_format import age, table
from corral._client import default_client
from corral.exception import InvalidError
from corral_protocol.v1 import control_pb2


def add_image_commands(sub: Any) -> None:
    """Register `corral image ...` on the CLI's subparsers."""
    image = sub.add_parser("image", help="manage the image layer caches of the nodes").add_subparsers(dest="image_command", required=True)
    image.add_parser("list", help="list cached image layers on every node").set_defaults(handler=cmd_image_list)
    p = image.add_parser("rm", help="remove cached image layers (by key prefix, or all) on every node; layers in use stay")
    p.add_argument("keys", nargs="*", metavar="KEY")
    p.add_argument("--all", action="store_true", help="every layer not in use")
    p.set_defaults(handler=cmd_image_rm)


def cmd_image_list(args: argparse.Namespace) -> int:
    client = default_client()
    layers = client.call(client.stub.ManageImages, control_pb2.ManageImagesRequest(), timeout=60).layers
    rows = [(layer.key[:16], layer.node_name, f"{layer.size_bytes / 1e6:.1f} MB", layer.in_use, age(layer.last_used), layer.title[:60])
            for layer in sorted(layers, key=lambda layer: (layer.node_name, -layer.last_used))]
    print(table(("LAYER", "NODE", "SIZE", "IN USE", "LAST USED", "STEP"), rows))
    total = sum(layer.size_bytes for layer in layers)
    print(f"{len(layers)} layer(s), {total / 1e6:.1f} MB (bases not counted); listed {time.strftime('%H:%M:%S')}")
    return 0


def cmd_image_rm(args: argparse.Namespace) -> int:
    if not (args.keys or args.all):
        raise InvalidError("name layer keys (or unique prefixes), or use --all")
    client = default_client()
    request = control_pb2.ManageImagesRequest(remove_keys=args.keys, remove_all=args.all)
    removed = client.call(client.stub.ManageImages, request, timeout=60).removed
    print(f"Removed {removed} image layer(s); images that need them are rebuilt at the next deploy.")
    return 0
