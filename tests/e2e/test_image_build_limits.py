"""Image build steps run under the node's build limits: a step that allocates past the memory limit
fails the deploy naming the step and "out of memory (limit 64 MiB)", a step that runs past the
step time limit fails naming the limit, a step cannot hold more tasks than the pids limit; none
leaves a layer behind.

A cluster of its own whose node has tiny limits (`CORRAL_BUILD_MEMORY_MIB=64`,
`CORRAL_BUILD_STEP_TIMEOUT_S=4`, `CORRAL_BUILD_PIDS=32`, read by the node `corral up` embeds as `corral-node`'s flags
default to them). The base and worker layers come from the machine's shared image cache, built
first through the session's cluster with the default limits.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Cluster, in_ci, start_cluster
from corral_protocol import env as corral_env
from corral_protocol.v1 import control_pb2
from corral_runtime import image_store
from e2e_helpers import client_for

MEMORY_MIB = 64
STEP_TIMEOUT_S = 4
PIDS = 32
# Forks children that wait until the step's tasks reach the pids limit; says how many it got.
FORK_UNTIL_REFUSED = (
    "python3 -c 'import os, time\n"
    "for n in range(200):\n"
    "    try:\n"
    "        pid = os.fork()\n"
    "    except OSError as err:\n"
    "        raise SystemExit(f\"forks refused after {n}: {err.strerror}\")\n"
    "    if pid == 0:\n"
    "        time.sleep(30)\n"
    "        os._exit(0)\n"
    "'"
)


def _layer_titles() -> list[str]:
    root = image_store.default_root(Path("/nonexistent")) / "layers"
    return [json.loads(meta.read_text())["title"] for meta in root.glob("*/meta.json")]


@pytest.fixture(scope="module")
def limited(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    client = client_for(cluster)
    [node] = client.call(client.stub.ListNodes, control_pb2.ListNodesRequest()).nodes
    problem = "" if node.inventory.isolation.mode == "runc" else f"the node does not run containers with runc: {node.inventory.isolation.reason}"
    problem = problem or ("" if shutil.which("mmdebstrap") else "mmdebstrap is not installed (apt-get install mmdebstrap)")
    if problem:
        if in_ci():
            pytest.fail(f"CI must build images: {problem}")
        pytest.skip(problem)
    # The base and the corral worker layer, with the default limits (the worker's uv install needs
    # more than 64 MiB); the limited node then finds them in the shared cache.
    warm = cluster.python("-c", "import corral\nfrom corral._client import default_client\nfrom corral._image_build import build_images\n"
                                "build_images(default_client(), [corral.Image.debian_slim().to_proto()])", timeout=600)
    assert warm.returncode == 0, warm.stdout + warm.stderr
    limited = start_cluster(tmp_path_factory.mktemp("limited") / "home", extra_env={
        corral_env.CORRAL_BUILD_MEMORY_MIB: str(MEMORY_MIB), corral_env.CORRAL_BUILD_STEP_TIMEOUT_S: str(STEP_TIMEOUT_S),
        corral_env.CORRAL_BUILD_PIDS: str(PIDS)})
    try:
        yield limited
    finally:
        limited.stop()


def _deploy(cluster: Cluster, tmp_path: Path, command: str) -> str:
    """Deploy a class whose image runs `command`; returns the failed deploy's stderr."""
    app = tmp_path / "limits_app.py"
    app.write_text(textwrap.dedent(f"""
        import corral

        app = corral.App("image-limits")

        @app.cls(image=corral.Image.debian_slim().run_commands({command!r}))
        class Limited:
            @corral.method()
            def ping(self) -> str:
                return "pong"
    """))
    result = cluster.corral("deploy", str(app), "--name", f"image-limits-{secrets.token_hex(3)}", timeout=300)
    assert result.returncode != 0, result.stdout + result.stderr
    return result.stderr


@pytest.mark.timeout(600)
def test_a_step_past_the_memory_limit_fails_naming_it(limited: Cluster, tmp_path: Path) -> None:
    marker = f"corral-oom-{secrets.token_hex(4)}"
    command = f'echo {marker} && python3 -c "b = bytearray(200 << 20)"'
    stderr = _deploy(limited, tmp_path, command)
    assert "ImageBuildError" in stderr, stderr
    assert f"step 3/3 'run {command}' failed: out of memory (limit {MEMORY_MIB} MiB)" in stderr, stderr
    assert marker in stderr  # the tail of the step's log
    assert not [title for title in _layer_titles() if marker in title]
    assert f"memory {MEMORY_MIB} MiB" in limited.logs()  # the node says its limits


@pytest.mark.timeout(600)
def test_a_step_past_the_time_limit_fails_naming_the_limit(limited: Cluster, tmp_path: Path) -> None:
    marker = f"corral-slow-{secrets.token_hex(4)}"
    stderr = _deploy(limited, tmp_path, f"echo {marker} && sleep 120")
    assert f"failed: it ran past the build step time limit ({STEP_TIMEOUT_S} s) and was stopped" in stderr, stderr
    assert f"step 3/3 'run echo {marker} && sleep 120'" in stderr and marker in stderr
    assert not [title for title in _layer_titles() if marker in title]


@pytest.mark.timeout(600)
def test_a_step_cannot_start_more_tasks_than_the_pids_limit(limited: Cluster, tmp_path: Path) -> None:
    stderr = _deploy(limited, tmp_path, FORK_UNTIL_REFUSED)
    refused = re.search(r"forks refused after (\d+): Resource temporarily unavailable", stderr)
    assert refused and "failed with exit status 1" in stderr, stderr
    refused_after = int(refused.group(1))
    assert 0 < refused_after < PIDS, stderr  # sh, python and its children share the step's PIDS tasks
