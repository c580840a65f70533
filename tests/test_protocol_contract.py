"""The corral.v1 wire contract stays lint-clean and its committed Python stubs match the protos.

Both checks need the pinned dev tools that `tools/dev-install` brings (grpcio-tools, mypy-protobuf,
and buf from npm). A missing tool is a broken dev environment, so these tests fail rather than skip.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "packages" / "protocol" / "proto"
BUF = ROOT / "tools" / ".npm" / "node_modules" / ".bin" / "buf"


def _run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], cwd=ROOT, capture_output=True, text=True, timeout=240)


def test_generated_stubs_match_the_protos() -> None:
    result = _run(sys.executable, ROOT / "tools" / "gen_protos.py", "--check")
    assert result.returncode == 0, (
        "the generated stubs under packages/protocol/src/corral_protocol/v1 differ from what the protos give; "
        "run `python tools/gen_protos.py` (with the tools from tools/dev-install) and commit the result\n"
        f"{result.stdout}{result.stderr}"
    )


def test_buf_lint_is_clean() -> None:
    assert BUF.exists(), f"buf is not installed at {BUF.relative_to(ROOT)}; run tools/dev-install"
    result = _run(BUF, "lint", PROTO_ROOT.relative_to(ROOT))
    assert result.returncode == 0, f"buf lint found problems in the corral.v1 protos:\n{result.stdout}{result.stderr}"


BASELINE = ROOT / "packages" / "protocol" / "baseline" / "corral-v1.binpb"


def test_no_breaking_change_against_the_released_protocol() -> None:
    """The guard .ci/run runs: buf breaking against the committed baseline, the newest protocol-v* tag
    and the merge base with main (docs/protocol.md, 'Compatibility')."""
    result = _run(ROOT / "tools" / "check-protocol-compat")
    assert result.returncode == 0, f"corral.v1 has a breaking change:\n{result.stdout}{result.stderr}"


def test_the_guard_catches_a_removed_field(tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "proto"
    shutil.copytree(PROTO_ROOT, copy)
    control = copy / "corral" / "v1" / "control.proto"
    text = control.read_text()
    assert "  bool wait = 4;\n" in text
    control.write_text(text.replace("  bool wait = 4;\n", ""))
    result = _run(BUF, "breaking", copy, "--against", BASELINE)
    assert result.returncode != 0
    assert 'name "wait"' in result.stdout + result.stderr
