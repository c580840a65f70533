"""The TypeScript reference client (clients/typescript) against a real `corral up`: a Python class
deployed, called from Node.js in JSON, success and every error path.

Skips only when node or npm is missing on a developer's machine. In CI (`CI` set, as .ci/run does)
a missing toolchain or an unbuilt client is a failure: .ci/run builds it with tools/build-ts-client.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import TESTS, Cluster
from corral_protocol.v1 import control_pb2
from e2e_helpers import client_for, deploy

ROOT = TESTS.parent
CLIENT = ROOT / "clients" / "typescript"
APP = "json-protocol-ts"


def _node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        if os.environ.get("CI"):
            pytest.fail("node and npm are required in CI for the TypeScript client's end-to-end test")
        pytest.skip("node or npm is not installed")
    assert node is not None
    return node


@pytest.fixture(scope="module")
def report(cluster: Cluster) -> Iterator[dict[str, Any]]:
    node = _node()
    # Build when needed (locally); .ci/run has already built it, with its npm cache.
    build = subprocess.run([str(ROOT / "tools" / "build-ts-client")], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, f"tools/build-ts-client failed:\n{build.stdout}\n{build.stderr}"
    deploy(cluster, "json_app.py", APP)
    try:
        run = subprocess.run(
            [node, str(CLIENT / "dist" / "e2e.js"), cluster.url, cluster.token, APP],
            capture_output=True, text=True, timeout=300,
        )
        assert run.returncode == 0, f"the TypeScript client failed:\n{run.stdout}\n{run.stderr}"
        yield json.loads(run.stdout.strip().splitlines()[-1])
    finally:
        client = client_for(cluster)
        try:
            client.call(client.stub.StopApp, control_pb2.StopAppRequest(app=APP), timeout=60)
        finally:
            client.close()


def test_lookup_bind_and_call_in_json(report: dict[str, Any]) -> None:
    assert report["signature"]["value"][:2] == ["text:ARGUMENT_TYPE_STRING", "times:ARGUMENT_TYPE_INTEGER"]
    assert report["call"] == {"value": {
        "text": ">abab", "times": 2, "data": base64.b64encode(b"hi").decode(), "scale": 2.0, "tag": None,
        "types": ["int", "bytes", "float"],
    }}
    assert report["big"] == {"value": 9007199254740994}


def test_spawn_and_get(report: dict[str, Any]) -> None:
    assert report["spawn"]["value"]["text"] == ">spawned"


def test_a_deadline_leaves_the_call_to_collect_by_its_id(report: dict[str, Any]) -> None:
    deadline = report["deadline"]["value"]
    assert deadline["callId"].startswith("fc-") and deadline["value"] == "done"


def test_error_paths_map_to_typed_errors(report: dict[str, Any]) -> None:
    user = report["userError"]
    assert user["error"] == "UserError" and user["message"] == "ValueError: no good"
    assert user["extra"] == {"type": "ValueError", "qualifiedType": "builtins.ValueError", "traceback": ""}
    assert report["invalidArgument"]["error"] == "InvalidArgumentError"
    assert "colour" in report["invalidArgument"]["message"]
    assert report["unencodable"]["error"] == "UserError" and "builtins.object" in report["unencodable"]["message"]
    assert report["unknownMethod"]["error"] == "NotFoundError"
    assert report["unknownClass"]["error"] == "NotFoundError"
    assert report["badParameter"]["error"] == "InvalidArgumentError"
    assert report["badToken"]["error"] == "AuthError"
