"""Regenerate the corral.v1 Python stubs from packages/protocol/proto.

protoc names generated modules after the proto package (`corral.v1`), which would collide with
the SDK's import name `corral`; the stubs are therefore rewritten to live under
`corral_protocol.v1`.

    python tools/gen_protos.py          # rewrite the stubs
    python tools/gen_protos.py --check  # exit 1 when the committed stubs have drifted
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "packages" / "protocol" / "proto"
OUT_DIR = ROOT / "packages" / "protocol" / "src" / "corral_protocol" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(into: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    raw = into / "raw"
    raw.mkdir()
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}",
            f"--plugin=protoc-gen-mypy={Path(sys.executable).parent / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={Path(sys.executable).parent / 'protoc-gen-mypy_grpc'}",
            f"--python_out={raw}", f"--grpc_python_out={raw}",
            f"--mypy_out={raw}", f"--mypy_grpc_out={raw}", *protos,
        ],
        check=True,
    )
    for path in sorted((raw / "corral" / "v1").iterdir()):
        if not path.name.endswith(GENERATED_SUFFIXES):
            continue
        text = path.read_text()
        text = re.sub(r"\bfrom corral\.v1 import\b", "from corral_protocol.v1 import", text)
        text = re.sub(r"\bimport corral\.v1\.", "import corral_protocol.v1.", text)
        text = re.sub(r"\bcorral\.v1\.(\w+_pb2)\b", r"corral_protocol.v1.\1", text)
        (into / path.name).write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the stubs are out of date")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        names = sorted(p.name for p in fresh.iterdir() if p.is_file())
        if args.check:
            current = sorted(p.name for p in OUT_DIR.iterdir() if p.name.endswith(GENERATED_SUFFIXES))
            drifted = [n for n in names if not (OUT_DIR / n).exists() or not filecmp.cmp(fresh / n, OUT_DIR / n, shallow=False)]
            drifted += [n for n in current if n not in names]
            if drifted:
                print("generated stubs are out of date; run python tools/gen_protos.py:", *drifted, sep="\n  ")
                return 1
            print(f"stubs match the protos ({len(names)} files)")
            return 0
        for stale in OUT_DIR.iterdir():
            if stale.name.endswith(GENERATED_SUFFIXES):
                stale.unlink()
        for name in names:
            shutil.copyfile(fresh / name, OUT_DIR / name)
        print(f"wrote {len(names)} files to {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
