"""The corral worker in every image: wheels of the node's own corral packages (editable or not),
made from their importable files, and the pins of their dependencies at the node's versions.

The worker layer of an image (`corral_runtime.image_build`) installs these with uv; its key is
their fingerprint, so it is rebuilt only when the node's corral changes.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import importlib.metadata
import io
import json
import os
import re
import secrets
import shutil
import zipfile
from pathlib import Path

CORRAL_DISTRIBUTIONS = ("corral-protocol", "corral", "corral-runtime")
TOOLS = "/tmp/.corral"  # inside a build container: uv, wheels, local files (on its private /tmp)


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _wheel(dist: importlib.metadata.Distribution, out: Path) -> Path:
    """A wheel of an installed distribution (editable or not), made from its importable files."""
    name, version = dist.metadata["Name"], dist.version
    stem = f"{name.replace('-', '_')}-{version}"
    top = (dist.read_text("top_level.txt") or "").split() or [name.replace("-", "_")]
    records: list[tuple[str, bytes]] = []
    for package in top:
        spec = __import__(package)
        root = Path(str(spec.__file__)).parent
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                records.append((f"{package}/{path.relative_to(root).as_posix()}", path.read_bytes()))
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in dist.requires or [])
    info = f"{stem}.dist-info"
    records += [(f"{info}/METADATA", metadata.encode()),
                (f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: corral\nRoot-Is-Purelib: true\nTag: py3-none-any\n")]
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for arcname, data in records:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([arcname, f"sha256={digest}", len(data)])
    writer.writerow([f"{info}/RECORD", "", ""])
    path = out / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for arcname, data in [*records, (f"{info}/RECORD", record.getvalue().encode())]:
            archive.writestr(zipfile.ZipInfo(arcname, (1980, 1, 1, 0, 0, 0)), data)
    return path


def worker_wheels(out_root: Path) -> tuple[str, list[str]]:
    """Wheels of the node's corral packages and the pins of their dependencies at the node's own
    versions; returns (fingerprint, requirements for `uv pip install` inside a build)."""
    staging = out_root / f".tmp-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir(parents=True)
    wheels, pins = [], set()
    for name in CORRAL_DISTRIBUTIONS:
        dist = importlib.metadata.distribution(name)
        wheels.append(_wheel(dist, staging))
        for requirement in dist.requires or []:
            if ";" in requirement and "extra" in requirement.split(";", 1)[1]:
                continue
            dep = _normalize(re.split(r"[ <>=!~;\[(]", requirement, maxsplit=1)[0])
            if dep in CORRAL_DISTRIBUTIONS:
                continue
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                pins.add(f"{dep}=={importlib.metadata.version(dep)}")
    digest = hashlib.sha256()
    for wheel in wheels:
        digest.update(wheel.name.encode() + wheel.read_bytes())
    digest.update("\n".join(sorted(pins)).encode())
    fingerprint = digest.hexdigest()[:32]
    target = out_root / fingerprint
    if target.exists():
        shutil.rmtree(staging)
    else:
        os.replace(staging, target)
    requirements = [f"{TOOLS}/wheels/{w.name}" for w in wheels] + sorted(pins)
    (target / "requirements.json").write_text(json.dumps(requirements))
    return fingerprint, requirements
