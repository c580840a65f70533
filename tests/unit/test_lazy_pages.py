"""The node's lazy-pages switch and its CRIU feature check (with stand-in criu binaries)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral_runtime import criu


@pytest.mark.parametrize(("value", "mode"), [
    (None, "auto"), ("", "auto"), ("auto", "auto"), ("ON", "on"), ("1", "on"), ("true", "on"),
    ("off", "off"), ("0", "off"), ("no", "off"),
])
def test_parse_lazy_pages_setting(value: str | None, mode: str) -> None:
    assert criu.parse_lazy_pages_setting(value) == mode


def test_parse_lazy_pages_setting_rejects_other_values() -> None:
    with pytest.raises(ValueError, match="auto, on, off"):
        criu.parse_lazy_pages_setting("sometimes")


def fake_criu(tmp_path: Path, output: str, status: int) -> str:
    path = tmp_path / "criu"
    path.write_text(f"#!/bin/sh\necho '{output}'\nexit {status}\n")
    path.chmod(0o755)
    return str(path)


def test_lazy_pages_supported_when_criu_check_says_so(tmp_path: Path) -> None:
    assert criu.lazy_pages_supported(fake_criu(tmp_path, "uffd-noncoop is supported", 0)) == (True, "")


def test_lazy_pages_unsupported_says_why(tmp_path: Path) -> None:
    supported, reason = criu.lazy_pages_supported(fake_criu(tmp_path, "UFFD is not supported", 1))
    assert not supported and "UFFD is not supported" in reason


def test_lazy_pages_unsupported_without_criu(tmp_path: Path) -> None:
    supported, reason = criu.lazy_pages_supported(str(tmp_path / "missing"))
    assert not supported and "cannot run" in reason
