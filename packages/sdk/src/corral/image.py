"""Container images: immutable recipes that nodes build into root filesystems.

Each method returns a new `Image` with one more step; the content hash covers the base and every
step (local files by their content). Misuse is refused when the recipe is written, with an
`InvalidError`. Nodes build an image layer by layer (each cached by hash), with the corral worker
installed into it automatically; see "Image store" in docs/architecture.md.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import re
import sys
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from corral.exception import InvalidError
from corral_protocol import env as corral_env
from corral_protocol.v1 import common_pb2

# Debian release of each Python version a `debian_slim` base can provide (the release's own python3).
SUPPORTED_PYTHON = {"3.11": "bookworm", "3.13": "trixie"}
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_SKIP_PARTS = {"__pycache__", ".git"}
_APT_NAME = re.compile(r"^[a-z0-9][a-z0-9+.\-]*(:[a-z0-9\-]+)?([=][A-Za-z0-9.+~:\-]+)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The archives of local files named by images defined in this process, by hash: deploy uploads
# them (the class definition carries only the recipe, `ImageSpec`, which names them by hash).
_LOCAL_FILES: dict[str, bytes] = {}


def local_files(bundle_hash: str) -> bytes | None:
    """The archive of local files an image step of this process names, or None."""
    return _LOCAL_FILES.get(bundle_hash)


@dataclass(frozen=True)
class LocalFiles:
    """Files a step copies into the image, zipped deterministically; addressed by sha256."""

    hash: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Image:
    """A recipe for the root filesystem a class runs in.

    Example:
        image = corral.Image.debian_slim().pip_install("torch")

        @app.cls(image=image)
        class Model: ...
    """

    base: str = "debian_slim"
    python_version: str = ""
    steps: tuple[common_pb2.ImageStep, ...] = ()
    local_files: tuple[LocalFiles, ...] = field(default=(), repr=False)

    @classmethod
    def debian_slim(cls, python_version: str | None = None) -> Image:
        """Debian minbase with the Python of the matching release (bookworm for 3.11, trixie for
        3.13). `None`: the Python version of this client."""
        version = python_version if python_version is not None else f"{sys.version_info[0]}.{sys.version_info[1]}"
        if not isinstance(version, str):
            raise InvalidError(f"Image.debian_slim: python_version must be a string such as '3.13', got {version!r}")
        if version.strip() not in SUPPORTED_PYTHON:
            origin = "this client's Python" if python_version is None else "python_version"
            raise InvalidError(f"Image.debian_slim: {origin} {version!r} has no base; "
                               f"supported versions: {', '.join(SUPPORTED_PYTHON)}")
        return cls(base="debian_slim", python_version=version.strip())

    # Python packages ----------------------------------------------------------------------------

    def pip_install(self, *packages: str | list[str]) -> Image:
        """Install Python packages (pip requirement strings) into the image's virtualenv, with uv."""
        return self._step(common_pb2.ImageStep(kind="pip", args=_strings("pip_install", packages)))

    def uv_pip_install(self, *packages: str | list[str]) -> Image:
        """The same as `pip_install`: every Python install uses uv."""
        return self._step(common_pb2.ImageStep(kind="pip", args=_strings("uv_pip_install", packages)))

    def pip_install_from_requirements(self, path: str | os.PathLike[str]) -> Image:
        """Install the requirements listed in a local requirements file (read now)."""
        file = Path(path)
        if in_container():
            return self._step(common_pb2.ImageStep(kind="pip", path=file.name))
        if not file.is_file():
            raise InvalidError(f"Image.pip_install_from_requirements: {str(path)!r} is not a file")
        lines = [line.split("#", 1)[0].strip() for line in file.read_text().splitlines()]
        requirements = [line for line in lines if line]
        if any(line.startswith("-") for line in requirements):
            raise InvalidError("Image.pip_install_from_requirements: pip options (lines starting with '-') are not supported")
        return self._step(common_pb2.ImageStep(kind="pip", args=requirements, path=file.name))

    # System -------------------------------------------------------------------------------------

    def apt_install(self, *packages: str | list[str]) -> Image:
        """Install Debian packages."""
        names = _strings("apt_install", packages)
        for name in names:
            if not _APT_NAME.match(name):
                raise InvalidError(f"Image.apt_install: {name!r} is not a Debian package name")
        return self._step(common_pb2.ImageStep(kind="apt", args=names))

    def run_commands(self, *commands: str | list[str]) -> Image:
        """Run shell commands (`sh -c`) at build time, with network access."""
        return self._step(common_pb2.ImageStep(kind="run", args=_strings("run_commands", commands)))

    def env(self, variables: dict[str, str]) -> Image:
        """Set environment variables for later steps and for containers."""
        if not isinstance(variables, dict) or not variables:
            raise InvalidError("Image.env needs a non-empty dict of str to str")
        for key, value in variables.items():
            if not isinstance(key, str) or not _ENV_NAME.match(key) or not isinstance(value, str):
                raise InvalidError(f"Image.env: {key!r}={value!r} is not a valid variable (names: letters, digits, _)")
        return self._step(common_pb2.ImageStep(kind="env", env=dict(sorted(variables.items()))))

    def workdir(self, path: str) -> Image:
        """The working directory of later steps and of containers (an absolute path)."""
        if not isinstance(path, str) or not path.startswith("/"):
            raise InvalidError(f"Image.workdir needs an absolute path, got {path!r}")
        return self._step(common_pb2.ImageStep(kind="workdir", path=os.path.normpath(path)))

    # Local files --------------------------------------------------------------------------------

    def add_local_file(self, local_path: str | os.PathLike[str], remote_path: str) -> Image:
        """Copy one local file into the image at `remote_path` (absolute; a trailing `/` keeps the name)."""
        source = Path(local_path)
        if in_container():
            return self._step(common_pb2.ImageStep(kind="files", path=str(remote_path)))
        if not source.is_file():
            raise InvalidError(f"Image.add_local_file: {str(local_path)!r} is not a file")
        remote = _remote("add_local_file", remote_path)
        if remote_path.endswith("/"):
            remote = f"{remote.rstrip('/')}/{source.name}"
        files = _zip({os.path.basename(remote): source})
        return self._files(files, os.path.dirname(remote) or "/")

    def add_local_dir(self, local_path: str | os.PathLike[str], remote_path: str) -> Image:
        """Copy a local directory's files into the image under `remote_path` (absolute)."""
        source = Path(local_path)
        if in_container():
            return self._step(common_pb2.ImageStep(kind="files", path=str(remote_path)))
        if not source.is_dir():
            raise InvalidError(f"Image.add_local_dir: {str(local_path)!r} is not a directory")
        return self._files(_zip(_tree(source)), _remote("add_local_dir", remote_path))

    def add_local_python_source(self, *modules: str) -> Image:
        """Copy local Python packages or modules (by import name) into the image's site directory,
        so the container imports them without their being on PyPI."""
        files: dict[str, Path] = {}
        if in_container():
            return self._step(common_pb2.ImageStep(kind="files", path="/corral/python"))
        for name in _strings("add_local_python_source", modules):
            try:
                spec = importlib.util.find_spec(name)
            except (ImportError, ValueError):
                spec = None
            if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
                raise InvalidError(f"Image.add_local_python_source: no local module or package named {name!r}")
            origin = Path(spec.origin)
            if spec.submodule_search_locations:
                for relative, path in _tree(origin.parent).items():
                    files[f"{name.replace('.', '/')}/{relative}"] = path
            else:
                files[f"{name.replace('.', '/')}.py"] = origin
        return self._files(_zip(files), "/corral/python")

    # Hashing and the wire -----------------------------------------------------------------------

    def to_proto(self) -> common_pb2.ImageSpec:
        spec = common_pb2.ImageSpec(base=self.base, python_version=self.python_version, steps=list(self.steps))
        for step in self.steps:  # the summary older runtimes read
            if step.kind == "pip":
                spec.pip_packages.extend(step.args)
            elif step.kind == "apt":
                spec.apt_packages.extend(step.args)
            elif step.kind == "run":
                spec.commands.extend(step.args)
            elif step.kind == "env":
                spec.env.update(step.env)
        return spec

    @property
    def hash(self) -> str:
        """The content hash of the base and every step (local files by content)."""
        return image_hash(self.to_proto())

    def __hash__(self) -> int:  # the steps are proto messages, which do not hash
        return hash(self.hash)

    def _step(self, step: common_pb2.ImageStep) -> Image:
        return replace(self, steps=(*self.steps, step))

    def _files(self, files: LocalFiles, destination: str) -> Image:
        step = common_pb2.ImageStep(kind="files", path=destination, bundle_hash=files.hash)
        return replace(self, steps=(*self.steps, step), local_files=(*self.local_files, files))


def in_container() -> bool:
    """Inside a container the class's module runs again, where the local files of its image are
    not (they are in the image already): their steps are then recorded without being read."""
    return bool(os.environ.get(corral_env.CORRAL_CONTAINER_ID))


def image_hash(spec: common_pb2.ImageSpec) -> str:
    """sha256 of the recipe's deterministic encoding."""
    return hashlib.sha256(spec.SerializeToString(deterministic=True)).hexdigest()


def _strings(what: str, values: tuple[str | list[str], ...]) -> list[str]:
    flat: list[str] = []
    for value in values:
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if not isinstance(item, str) or not item.strip():
                raise InvalidError(f"Image.{what} takes non-empty strings, got {item!r}")
            flat.append(item.strip())
    if not flat:
        raise InvalidError(f"Image.{what} needs at least one argument")
    return flat


def _remote(what: str, path: str) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidError(f"Image.{what}: the image path must be absolute, got {path!r}")
    return os.path.normpath(path)


def _tree(root: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not _SKIP_PARTS.intersection(path.relative_to(root).parts):
            files[path.relative_to(root).as_posix()] = path
    return files


def _zip(files: dict[str, Path]) -> LocalFiles:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, _FIXED_TIME)
            info.external_attr = (0o755 if os.access(files[name], os.X_OK) else 0o644) << 16
            archive.writestr(info, files[name].read_bytes())
    data = buffer.getvalue()
    files_hash = hashlib.sha256(data).hexdigest()
    _LOCAL_FILES[files_hash] = data
    return LocalFiles(files_hash, data)
