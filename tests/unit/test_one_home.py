"""Rules shared by the SDK, the control plane and the runtime live once, in `corral_protocol`, and
the runtime reaches the SDK only through `corral.container_api`. These read the packages' source."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ROOT / "packages"
SOURCES = {
    "corral": PACKAGES / "sdk" / "src" / "corral",
    "corral_scheduler": PACKAGES / "scheduler" / "src" / "corral_scheduler",
    "corral_runtime": PACKAGES / "runtime" / "src" / "corral_runtime",
    "corral_protocol": PACKAGES / "protocol" / "src" / "corral_protocol",
}
ENV_NAMES = SOURCES["corral_protocol"] / "env.py"
_ENV_NAME = re.compile(r"^CORRAL_[A-Z0-9_]+$")


def _modules(package: str) -> Iterator[tuple[str, Path, ast.Module]]:
    root = SOURCES[package]
    for path in sorted(root.rglob("*.py")):
        if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
            continue
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join((package, *parts)).removesuffix(".__init__")
        yield name, path, ast.parse(path.read_text(), str(path))


def _all_modules() -> Iterator[tuple[str, Path, ast.Module]]:
    for package in SOURCES:
        yield from _modules(package)


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"


def test_corral_environment_variables_are_named_only_in_corral_protocol_env() -> None:
    found = [
        f"{_where(path, node)} {node.value!r}"
        for _, path, tree in _all_modules() if path != ENV_NAMES
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _ENV_NAME.match(node.value)
    ]
    assert not found, "spell CORRAL_* variables with corral_protocol.env's constants:\n" + "\n".join(found)


@pytest.mark.parametrize("field", ["timeout_s", "max_inputs", "max_batch_size"])
def test_option_defaults_are_applied_only_in_corral_protocol_options(field: str) -> None:
    """`options.timeout_s or 300.0` and the like are `effective_*` / `batched_method` calls."""
    found = [
        _where(path, node)
        for name, path, tree in _all_modules() if not name.startswith("corral_protocol")
        for node in ast.walk(tree)
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or)
        and any(isinstance(v, ast.Attribute) and v.attr == field for v in node.values)
    ]
    assert not found, f"use corral_protocol.options for the effective {field}:\n" + "\n".join(found)


def test_default_timeout_is_defined_once() -> None:
    found = [
        _where(path, node)
        for name, path, tree in _all_modules() if name != "corral_protocol.options"
        for node in tree.body
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "DEFAULT_TIMEOUT_S" for t in node.targets)
    ]
    assert not found, "DEFAULT_TIMEOUT_S lives in corral_protocol.options:\n" + "\n".join(found)


def test_parameter_kinds_and_bool_spellings_are_written_only_in_corral_protocol() -> None:
    """No other module maps kinds to `ParameterValue` fields or lists how a bool is written."""
    found = []
    for name, path, tree in _all_modules():
        if name.startswith("corral_protocol"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Set, ast.Dict, ast.List, ast.Tuple)):
                items = node.keys if isinstance(node, ast.Dict) else node.elts
                values = node.values if isinstance(node, ast.Dict) else []
                strings = {n.value for n in [*items, *values] if isinstance(n, ast.Constant) and isinstance(n.value, str)}
                if {"true", "false"} <= strings or {"yes", "on"} <= strings or {"int_value", "bool_value"} <= strings:
                    found.append(_where(path, node))
    assert not found, "use corral_protocol.parameters:\n" + "\n".join(found)


def test_gpu_names_are_written_only_in_corral_protocol_gpus() -> None:
    """GPU request names and NVML model names are the table's (`corral_protocol.gpus`): the SDK's
    validation, the control plane's placement and the node's simulated inventory all read it."""
    from corral_protocol import gpus

    names = {*gpus.REQUEST_NAMES, *gpus.NVML_MODELS, *(m.nvml_name for m in gpus.REQUEST_NAMES.values())}
    found = [
        f"{_where(path, node)} {node.value!r}"
        for name, path, tree in _all_modules() if name != "corral_protocol.gpus"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
    ]
    assert not found, "use corral_protocol.gpus for GPU names:\n" + "\n".join(found)


def test_no_client_matches_error_text_to_decide() -> None:
    """Clients act on the protocol's ErrorReason, never on the words of a message."""
    found = [
        _where(path, node)
        for _, path, tree in _modules("corral")
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) and isinstance(node.left.value, str)
        and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops)
        and any(isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id == "str" for c in node.comparators)
    ]
    assert not found, "match a corral_protocol ErrorReason instead of error text:\n" + "\n".join(found)


def test_snapshot_identity_is_a_message_not_a_dict() -> None:
    found = [
        _where(path, node)
        for _, path, tree in _modules("corral_runtime")
        for node in ast.walk(tree)
        if isinstance(node, ast.Dict)
        and {"workdir", "restored"} & {k.value for k in node.keys if isinstance(k, ast.Constant)}
    ]
    assert not found, "the snapshot identity is worker_pb2.SnapshotIdentity:\n" + "\n".join(found)


# The runtime and the SDK ------------------------------------------------------------------------


def _imported(module: str, tree: ast.Module) -> set[str]:
    """Every module `module` imports, at any level (TYPE_CHECKING blocks and functions included)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*module.split(".")[: -node.level], base]).rstrip(".")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from corral import _options`
    return names


def test_runtime_uses_only_the_sdks_container_api() -> None:
    found = [
        f"{path.relative_to(ROOT)} imports {name}"
        for module, path, tree in _modules("corral_runtime")
        for name in sorted(_imported(module, tree))
        if name.startswith("corral.") and not (name == "corral.container_api" or name.startswith("corral.container_api."))
    ]
    assert not found, "corral_runtime may use only corral.container_api:\n" + "\n".join(found)


def test_runtime_pins_the_exact_sdk_version() -> None:
    """The container interface changes with the SDK's version, so the runtime pins it exactly
    (read by pattern: tomllib is not in Python 3.10)."""
    sdk = (PACKAGES / "sdk" / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', sdk, re.M)
    assert version is not None
    runtime = (PACKAGES / "runtime" / "pyproject.toml").read_text()
    pins = re.findall(r'^\s*"(corral\s*[=<>!~][^"]*)"', runtime, re.M)
    assert [pin.replace(" ", "") for pin in pins] == [f"corral=={version[1]}"]


def _sdk_graph() -> dict[str, set[str]]:
    modules = {name: tree for name, _, tree in _modules("corral")}
    return {name: {m for m in _imported(name, tree) if m in modules and m not in (name, "corral")} for name, tree in modules.items()}


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        current = todo.pop()
        if current == goal:
            return True
        if current not in seen:
            seen.add(current)
            todo.extend(graph.get(current, ()))
    return False


@pytest.mark.parametrize(("a", "b"), [("corral._client", "corral._direct"), ("corral.app", "corral.cls")])
def test_no_import_cycle(a: str, b: str) -> None:
    graph = _sdk_graph()
    assert not (_reaches(graph, a, b) and _reaches(graph, b, a)), f"{a} and {b} import each other (directly or not)"


def test_sdk_submodules_have_no_import_cycles() -> None:
    """Apart from the package's own `__init__` (which re-exports), no SDK module imports one that
    imports it back, even for type checking only."""
    graph = _sdk_graph()
    cycles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if a != b and _reaches(graph, b, a)})
    assert not cycles, f"import cycles among SDK modules: {cycles}"
