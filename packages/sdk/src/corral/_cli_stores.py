"""`corral secret`, `corral token` and `corral snapshot`: what the control plane stores for users."""

from __future__ import annotations

import argparse
from typing import Any

from corral._cli_format import age, table
from corral._client import default_client
from corral.exception import InvalidError
from corral_protocol.v1 import control_pb2


def add_store_commands(sub: Any) -> None:
    """Register `corral secret ...`, `corral token ...` and `corral snapshot ...` on the CLI's subparsers."""
    secret = sub.add_parser("secret", help="manage secrets").add_subparsers(dest="secret_command", required=True)
    p = secret.add_parser("create", help="create or replace a secret")
    p.add_argument("name")
    p.add_argument("values", nargs="+", metavar="KEY=VALUE")
    p.set_defaults(handler=cmd_secret_create)
    secret.add_parser("list", help="list secret names").set_defaults(handler=cmd_secret_list)
    p = secret.add_parser("delete", help="delete a secret")
    p.add_argument("name")
    p.set_defaults(handler=cmd_secret_delete)

    token = sub.add_parser("token", help="manage proxy tokens for web endpoints").add_subparsers(dest="token_command", required=True)
    p = token.add_parser("create", help="create a proxy token for web endpoints with requires_proxy_auth")
    p.add_argument("--name", default="", help="a note to recognise the token by")
    p.set_defaults(handler=cmd_token_create)

    snapshot = sub.add_parser("snapshot", help="manage memory snapshot images").add_subparsers(dest="snapshot_command", required=True)
    snapshot.add_parser("list", help="list snapshot images on every node").set_defaults(handler=cmd_snapshot_list)
    p = snapshot.add_parser("rm", help="delete snapshot images (by key prefix, app, or all)")
    p.add_argument("keys", nargs="*", metavar="KEY")
    p.add_argument("--app", help="every image of this app (name or id)")
    p.add_argument("--all", action="store_true", help="every image")
    p.set_defaults(handler=cmd_snapshot_rm)



def cmd_snapshot_list(args: argparse.Namespace) -> int:
    client = default_client()
    snapshots = client.call(client.stub.ListSnapshots, control_pb2.ListSnapshotsRequest()).snapshots
    rows = [
        (s.image.snapshot_key[:16], s.app_name or s.image.app_id, s.image.class_name, s.node_name or s.node_id,
         f"{s.image.size_bytes / 1e6:.0f} MB", s.image.restores, "broken" if s.broken else "ok", age(s.image.created_at))
        for s in snapshots
    ]
    print(table(("KEY", "APP", "CLASS", "NODE", "SIZE", "RESTORES", "STATE", "AGE"), rows))
    return 0


def cmd_snapshot_rm(args: argparse.Namespace) -> int:
    if not (args.keys or args.app or args.all):
        raise InvalidError("name snapshot keys (or unique prefixes), or use --app APP or --all")
    client = default_client()
    request = control_pb2.DeleteSnapshotsRequest(snapshot_keys=args.keys, app=args.app or "", all=args.all)
    deleted = client.call(client.stub.DeleteSnapshots, request).deleted
    print(f"Deleted {deleted} snapshot key(s); their containers will take fresh snapshots.")
    return 0


def cmd_secret_create(args: argparse.Namespace) -> int:
    values = {}
    for pair in args.values:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidError(f"secret values are KEY=VALUE, got {pair!r}")
        values[key] = value
    client = default_client()
    client.call(client.stub.SetSecret, control_pb2.SetSecretRequest(name=args.name, values=values))
    print(f"Secret {args.name!r} saved with keys: {', '.join(sorted(values))}.")
    return 0


def cmd_secret_list(args: argparse.Namespace) -> int:
    client = default_client()
    for name in client.call(client.stub.ListSecrets, control_pb2.ListSecretsRequest()).names:
        print(name)
    return 0


def cmd_secret_delete(args: argparse.Namespace) -> int:
    client = default_client()
    client.call(client.stub.DeleteSecret, control_pb2.DeleteSecretRequest(name=args.name))
    print(f"Secret {args.name!r} deleted. Running containers keep its values; new containers that need it fail to start.")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    client = default_client()
    token = client.call(client.stub.CreateProxyToken, control_pb2.CreateProxyTokenRequest(name=args.name))
    print(f"Token ID: {token.token_id}\nToken secret: {token.token_secret}\n(the secret is shown only now)")
    print(f"Send them to web endpoints with requires_proxy_auth as headers:\n  Corral-Key: {token.token_id}\n  Corral-Secret: {token.token_secret}")
    return 0
