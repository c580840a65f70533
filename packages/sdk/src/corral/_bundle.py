"""Code bundles: the user's module (a file or a package) and its local imports, content-addressed.

The bundle root is the directory that holds the top-level module or package. Every module that is
loaded in this process from a file under that root (and not from an installed environment) is
included, so sibling helper modules travel too.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from corral.exception import InvalidError

MAX_BUNDLE_BYTES = 128 * 1024 * 1024
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_PLATFORM_PACKAGES = {"corral", "corral_protocol", "corral_scheduler", "corral_runtime"}
_SKIP_PARTS = {"__pycache__", ".git", ".venv", "venv", "site-packages", "dist-packages", "node_modules"}


@dataclass(frozen=True)
class Bundle:
    hash: str
    data: bytes
    module: str
    files: tuple[str, ...]


def _module_file(module: ModuleType) -> Path:
    file = getattr(module, "__file__", None)
    if not file:
        raise InvalidError(f"module {module.__name__!r} has no source file, so it cannot be shipped to containers")
    return Path(file).resolve()


def importable_name(module: ModuleType) -> str:
    """The name a container imports: the module's own, or the file's stem for `__main__`."""
    if module.__name__ != "__main__":
        return module.__name__
    spec = getattr(module, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return spec.name  # python -m package.module
    return _module_file(module).stem


def build_bundle(module: ModuleType) -> Bundle:
    name = importable_name(module)
    file = _module_file(module)
    depth = name.count(".") + (1 if file.name == "__init__.py" else 0)
    root = file.parent
    for _ in range(depth):
        root = root.parent
    files: dict[str, Path] = {}
    for loaded_name, loaded in list(sys.modules.items()):
        if loaded_name.partition(".")[0] in _PLATFORM_PACKAGES:
            continue
        path = getattr(loaded, "__file__", None)
        if not path or not path.endswith(".py"):
            continue
        resolved = Path(path).resolve()
        try:
            rel = resolved.relative_to(root)
        except ValueError:
            continue
        if _SKIP_PARTS.intersection(rel.parts) or _is_environment(resolved):
            continue
        files[rel.as_posix()] = resolved
        # A package's __init__ files up to the root make its modules importable.
        for parent in rel.parents[:-1]:
            init = root / parent / "__init__.py"
            if init.exists():
                files[(parent / "__init__.py").as_posix()] = init
    files[file.relative_to(root).as_posix()] = file
    buffer = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for rel_name in sorted(files):
            content = files[rel_name].read_bytes()
            total += len(content)
            if total > MAX_BUNDLE_BYTES:
                raise InvalidError(f"the code bundle under {root} is larger than {MAX_BUNDLE_BYTES // 2**20} MiB")
            info = zipfile.ZipInfo(rel_name, date_time=_FIXED_TIME)
            info.external_attr = 0o644 << 16
            archive.writestr(info, content, zipfile.ZIP_DEFLATED)
    data = buffer.getvalue()
    return Bundle(hashlib.sha256(data).hexdigest(), data, name, tuple(sorted(files)))


def _is_environment(path: Path) -> bool:
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    return any(str(path).startswith(os.path.join(p, "lib")) for p in prefixes if p)
