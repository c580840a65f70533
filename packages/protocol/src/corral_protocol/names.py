"""The naming rule for apps and secrets, shared by the SDK (early errors) and the server (authority)."""

from __future__ import annotations

MAX_NAME_LENGTH = 64
NAME_RULE = f"1-{MAX_NAME_LENGTH} letters, digits, '-', '_' or '.'"


def is_valid_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_NAME_LENGTH
        and all(c.isalnum() or c in "-_." for c in name)
    )
