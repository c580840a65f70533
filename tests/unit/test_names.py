"""The URL-safe naming rule for apps, classes and secrets (corral_protocol.names)."""

from __future__ import annotations

import pytest

from corral_protocol.names import MAX_NAME_LENGTH, is_valid_name, name_problem


@pytest.mark.parametrize("name", ["app", "my-app", "my_app", "v1.2", "A", "0day", "_private", "a" * MAX_NAME_LENGTH, "Model", "x.y-z_1"])
def test_url_safe_names_are_accepted(name: str) -> None:
    assert is_valid_name(name)
    assert name_problem("app", name) is None


@pytest.mark.parametrize("name", [
    "", ".", "..", ".hidden", "-flag", "名前", "café", "a b", "a/b", "a?b", "a%2e", "a#b", "a" * (MAX_NAME_LENGTH + 1),
    "tab\t", "new\nline", None, 3,
])
def test_everything_else_is_refused_with_the_rule(name: object) -> None:
    assert not is_valid_name(name)
    problem = name_problem("secret", name)
    assert problem is not None and "secret name" in problem and "ASCII letters, digits" in problem
