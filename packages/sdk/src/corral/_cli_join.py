"""`corral node join-token create|list|revoke`: the credentials machines join as nodes with.

They run on the control plane's host, as its user, against `$CORRAL_HOME` (the join tokens live
there, beside the admin token); the running control plane picks changes up at once.

    corral node join-token create --description "gpu rack 3" --ttl 24h
    corral-node --server grpcs://CONTROL:7470 --tls-ca ca.pem --token-file join-token
"""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

from corral._cli_format import age, table
from corral._home import corral_home
from corral.exception import InvalidError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_join_token_commands(node: Any) -> None:
    """Register `corral node join-token ...` on the `corral node` subparsers."""
    join = node.add_parser(
        "join-token", help="manage join tokens: credentials that only let a machine join as a node (run on the control plane's host)",
    ).add_subparsers(dest="join_token_command", required=True)
    p = join.add_parser("create", help="make a join token and print it (the only time it is shown)")
    p.add_argument("--description", default="", help="a note to recognise the token by")
    p.add_argument("--ttl", default=None, metavar="DURATION", help="refuse it after this long, e.g. 30m, 24h, 7d (default: never)")
    p.set_defaults(handler=cmd_join_token_create)
    join.add_parser("list", help="list join tokens (ids, never secrets)").set_defaults(handler=cmd_join_token_list)
    p = join.add_parser("revoke", help="stop a join token from letting more nodes join")
    p.add_argument("token_id", metavar="ID")
    p.set_defaults(handler=cmd_join_token_revoke)


def parse_duration(text: str) -> float:
    """`30m`, `24h`, `7d` or `90s` as seconds."""
    match = _DURATION.match(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise InvalidError(f"--ttl {text!r}: give a positive number and a unit, e.g. 30m, 24h or 7d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _book() -> Any:
    try:
        from corral_scheduler.join_tokens import JOIN_TOKENS_FILE, JoinTokenBook
    except ImportError:
        raise InvalidError(
            "join tokens live with the control plane: run this on its host, where corral-scheduler is installed"
        ) from None
    return JoinTokenBook(corral_home() / JOIN_TOKENS_FILE)


def _stored(action: Any) -> Any:
    from corral_scheduler.join_tokens import JoinTokenError

    try:
        return action()
    except (JoinTokenError, ValueError) as err:
        raise InvalidError(str(err)) from None


def cmd_join_token_create(args: argparse.Namespace) -> int:
    ttl_s = parse_duration(args.ttl) if args.ttl else None
    book = _book()
    token = _stored(lambda: book.create(description=args.description, ttl_s=ttl_s))
    print(token)
    print(f"(shown only now; store it in a file of mode 0600 on the node and pass --token-file; revoke with "
          f"`corral node join-token revoke {token.split('.')[0]}`)")
    return 0


def cmd_join_token_list(args: argparse.Namespace) -> int:
    now = time.time()
    rows = [
        (t.token_id, age(t.created_at),
         "never" if not t.expires_at else "expired" if t.expired(now) else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t.expires_at)),
         t.description or "-")
        for t in _stored(_book().list)
    ]
    print(table(("ID", "AGE", "EXPIRES", "DESCRIPTION"), rows))
    return 0


def cmd_join_token_revoke(args: argparse.Namespace) -> int:
    book = _book()
    if not _stored(lambda: book.revoke(args.token_id)):
        raise InvalidError(f"no join token with id {args.token_id!r} (`corral node join-token list` shows them)")
    print(f"Revoked join token {args.token_id}; nodes that joined with it stay joined")
    return 0
