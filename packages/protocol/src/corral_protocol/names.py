"""The naming rule for apps, classes and secrets, shared by the SDK (early errors) and the control
plane (the authority).

Names appear in URLs (`/<app>/<label>` on the web gateway), CLI arguments and file-system paths,
so they are limited to a URL-safe ASCII set that no client normalises away: `名前` would be
percent-encoded, and `.` and `..` are resolved by every HTTP client before the request is sent.

Example:
    from corral_protocol.names import name_problem

    problem = name_problem("app", name)
    if problem:
        raise InvalidError(problem)
"""

from __future__ import annotations

import re

MAX_NAME_LENGTH = 64
NAME_RULE = (
    f"1-{MAX_NAME_LENGTH} ASCII letters, digits, '-', '_' or '.', starting with a letter, digit or '_'"
)
_NAME = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9._-]{{0,{MAX_NAME_LENGTH - 1}}}")


def is_valid_name(name: object) -> bool:
    """Whether `name` follows NAME_RULE."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def name_problem(kind: str, name: object) -> str | None:
    """None for a valid name, else the message that refuses it (`kind`: app, class, secret, label)."""
    if is_valid_name(name):
        return None
    return f"{kind} name {name!r} is not allowed: a {kind} name must be {NAME_RULE} (names appear in URLs)"
