"""The Image API: each method returns a new image whose hash covers every step; misuse is refused
when the recipe is written."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import corral
from corral.exception import InvalidError


def test_each_step_makes_a_new_image_with_its_own_hash(tmp_path: Path) -> None:
    base = corral.Image.debian_slim()
    assert base.python_version == f"{sys.version_info[0]}.{sys.version_info[1]}"
    one = base.pip_install("six")
    assert base.steps == () and one.hash != base.hash
    assert one.hash == corral.Image.debian_slim().pip_install("six").hash
    assert one == corral.Image.debian_slim().pip_install("six") and len({one, corral.Image.debian_slim().pip_install("six")}) == 1
    assert one.hash != base.pip_install("six", "attrs").hash
    (tmp_path / "a.txt").write_text("1")
    first = base.add_local_dir(tmp_path, "/srv")
    (tmp_path / "a.txt").write_text("2")
    assert base.add_local_dir(tmp_path, "/srv").hash != first.hash  # files by content
    full = (base.uv_pip_install("attrs").apt_install("jq").run_commands("echo hi").env({"A": "b"}).workdir("/srv")
            .add_local_file(tmp_path / "a.txt", "/etc/a.txt"))
    assert [s.kind for s in full.steps] == ["pip", "apt", "run", "env", "workdir", "files"]
    spec = full.to_proto()
    assert list(spec.pip_packages) == ["attrs"] and list(spec.apt_packages) == ["jq"] and dict(spec.env) == {"A": "b"}


def test_requirements_file_is_read_when_defined(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("six==1.17.0  # pinned\n\nattrs\n")
    image = corral.Image.debian_slim().pip_install_from_requirements(requirements)
    assert list(image.steps[0].args) == ["six==1.17.0", "attrs"]


@pytest.mark.parametrize(("client", "expected"), [((3, 11, 7), "3.11"), ((3, 13, 5), "3.13")])
def test_python_version_none_is_the_clients_own(monkeypatch: pytest.MonkeyPatch, client: tuple[int, ...], expected: str) -> None:
    monkeypatch.setattr(corral.image, "sys", SimpleNamespace(version_info=client))  # this module's view of the client
    image = corral.Image.debian_slim()
    assert image.python_version == expected and image.to_proto().python_version == expected
    assert corral.Image.debian_slim(python_version="3.13").python_version == "3.13"


@pytest.mark.parametrize("client", [(3, 12, 4), (3, 10, 0), (3, 14, 0)])
def test_a_client_on_a_python_no_base_provides_must_name_one(monkeypatch: pytest.MonkeyPatch, client: tuple[int, ...]) -> None:
    monkeypatch.setattr(corral.image, "sys", SimpleNamespace(version_info=client))
    with pytest.raises(InvalidError, match=rf"this client's Python '3.{client[1]}' has no base; supported versions: 3.11, 3.13"):
        corral.Image.debian_slim()
    assert corral.Image.debian_slim(python_version="3.11").python_version == "3.11"  # an explicit one still works


@pytest.mark.parametrize(("make", "message"), [
    (lambda: corral.Image.debian_slim(python_version="3.12"), "supported versions: 3.11, 3.13"),
    (lambda: corral.Image.debian_slim(python_version="2.7"), "2.7"),
    (lambda: corral.Image.debian_slim(python_version=3.13), "must be a string such as '3.13', got 3.13"),  # type: ignore[arg-type]
    (lambda: corral.Image.debian_slim(python_version=" 3.13\x00"), "supported versions"),
    (lambda: corral.Image.debian_slim().pip_install(""), "non-empty"),
    (lambda: corral.Image.debian_slim().pip_install(), "at least one"),
    (lambda: corral.Image.debian_slim().apt_install("Not A Package"), "Debian package name"),
    (lambda: corral.Image.debian_slim().add_local_dir("/no/such/dir", "/srv"), "is not a directory"),
    (lambda: corral.Image.debian_slim().add_local_file("/no/such/file", "/srv/f"), "is not a file"),
    (lambda: corral.Image.debian_slim().add_local_file(__file__, "relative/path"), "absolute"),
    (lambda: corral.Image.debian_slim().pip_install_from_requirements("/no/such/requirements.txt"), "is not a file"),
    (lambda: corral.Image.debian_slim().add_local_python_source("no_such_module_xyz"), "no local module"),
    (lambda: corral.Image.debian_slim().env({"1BAD": "x"}), "not a valid variable"),
    (lambda: corral.Image.debian_slim().workdir("srv"), "absolute"),
])
def test_misuse_is_refused_at_definition(make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidError, match=message):
        make()


def test_a_class_with_a_bad_image_is_refused_when_defined() -> None:
    app = corral.App("image-api")
    with pytest.raises(InvalidError, match="corral.Image"):
        @app.cls(image="python:3.11")  # type: ignore[arg-type]
        class Wrong:
            pass
