"""Images built for real, end to end: `corral deploy` builds a class's image (a Debian base from
mmdebstrap, layers with uv, apt and local files, the corral worker installed automatically) with
progress on the client; methods see the image's packages, tools, files, environment and working
directory, and none of the node's; a second deploy reuses every layer; a failing step fails the
deploy with the step's name and log tail and leaves no layer; a snapshot class with an image
restores inside its image; a Python 3.13 image (Debian trixie) runs its class on 3.13; an image
given by `with_options(image=...)` is built when the handle first binds, not at container start.

The base root filesystem and the layers are cached on the machine (`/var/cache/corral/images`, which
`.ci/run` fills once), so only the first run on a machine pays for mmdebstrap and PyPI downloads.
Needs a node with runc and mmdebstrap (skipped otherwise, failed under CI).
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import APPS, Cluster, in_ci, read_events, require_snapshot_prerequisites, wait_for
from corral_protocol.v1 import control_pb2
from corral_runtime import image_store
from e2e_helpers import client_for, containers

IMAGE_APP_STEPS = {"corral worker", "apt install jq", "pip install pyfiglet==1.0.2", "add local files to /srv/files"}
FAILING_STEP = "step 3/3 'run echo corral-image-step-output && exit 3' failed with exit status 3"


def _layers() -> dict[str, str]:
    root = image_store.default_root(Path("/nonexistent")) / "layers"
    found = {}
    for meta in root.glob("*/meta.json"):
        found[meta.parent.name] = json.loads(meta.read_text())["title"]
    return found


@pytest.fixture(scope="module")
def deployed(cluster: Cluster) -> Iterator[str]:
    """image_app deployed once for the module (its build output); the images stay cached."""
    client = client_for(cluster)
    [node] = client.call(client.stub.ListNodes, control_pb2.ListNodesRequest()).nodes
    problem = "" if node.inventory.isolation.mode == "runc" else f"the node does not run containers with runc: {node.inventory.isolation.reason}"
    problem = problem or ("" if shutil.which("mmdebstrap") else "mmdebstrap is not installed (apt-get install mmdebstrap)")
    if problem:
        if in_ci():
            pytest.fail(f"CI must build images: {problem}")
        pytest.skip(problem)
    result = cluster.corral("deploy", str(APPS / "image_app.py"), "--name", "images", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    yield result.stderr
    cluster.corral("app", "stop", "images")


def _call(cluster: Cluster, code: str) -> str:
    result = cluster.python("-c", "import corral\nC = corral.Cls.from_name('images', 'InImage')()\n" + code, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


@pytest.mark.timeout(900)
def test_methods_see_the_image(cluster: Cluster, deployed: str) -> None:
    assert "step 7/7" in deployed and "ready" in deployed  # the client saw the build's progress
    # A PyPI package the client's environment lacks imports remotely.
    with pytest.raises(ImportError):
        __import__("pyfiglet")
    assert _call(cluster, "print(C.figlet_version.remote())") == "1.0.2"
    # A Debian tool from apt_install runs; local files are there; env and workdir from the recipe.
    assert _call(cluster, "print(C.jq.remote('{\"a\": [1, 2]}'))") == "[1,2]"
    assert _call(cluster, "print(C.local_file.remote())") == "hello from a local dir"
    env = json.loads(_call(cluster, "import json; print(json.dumps(C.environment.remote()))"))
    assert env == {"greeting": "from-the-recipe", "cwd": "/srv", "python": "/opt/venv/bin/python", "image_hash": 64,
                   "node_home_visible": False}
    assert "building its image first" not in cluster.logs()  # the deploy built it; starts build nothing


@pytest.mark.timeout(900)
def test_a_python_3_13_image_runs_its_class_on_trixie(cluster: Cluster, deployed: str) -> None:
    result = cluster.corral("deploy", str(APPS / "image_py313_app.py"), "--name", "images-py313", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "debian_slim (Debian trixie, Python 3.13)" in result.stderr, result.stderr
    try:
        code = ("import corral\nC = corral.Cls.from_name('images-py313', 'OnPython313')()\n"
                "print(C.version.remote(), C.executable.remote())")
        answer = cluster.python("-c", code, timeout=180)
        assert answer.returncode == 0, answer.stdout + answer.stderr
        assert answer.stdout.split() == ["[3,", "13]", "/opt/venv/bin/python"], answer.stdout
    finally:
        cluster.corral("app", "stop", "images-py313")


WITH_OPTIONS_CLIENT = """
import sys, corral
marker = sys.argv[1]
image = corral.Image.debian_slim().run_commands(f"echo {marker} > /marker").env({"IMAGE_GREETING": marker})
handle = corral.Cls.from_name("images", "InImage").with_options(image=image)
print("handle made", file=sys.stderr, flush=True)
first, second = handle(), handle()
print(first.environment.remote()["greeting"], second.environment.remote()["greeting"])
broken = corral.Cls.from_name("images", "InImage").with_options(image=image.run_commands(f"echo {marker}-broken && exit 7"))
try:
    broken().environment.remote()
except corral.exception.ImageBuildError as err:
    print("refused:", str(err).splitlines()[0])
"""


@pytest.mark.timeout(900)
def test_with_options_image_is_built_when_the_handle_binds(cluster: Cluster, deployed: str) -> None:
    marker = f"corral-with-options-{secrets.token_hex(4)}"
    result = cluster.python("-c", WITH_OPTIONS_CLIENT, marker, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    first, refused = result.stdout.strip().splitlines()
    assert first == f"{marker} {marker}"  # both instances run in the handle's image
    assert refused.startswith("refused: image build failed on node") and \
        f"step 5/5 'run echo {marker}-broken && exit 7' failed with exit status 7" in refused, refused
    # Built at the first bind (not by with_options, not at container start), once for both instances.
    building = f"building: run echo {marker} > /marker"
    assert result.stderr.index("handle made") < result.stderr.index(building), result.stderr
    assert result.stderr.count(building) == 1, result.stderr
    assert "building its image first" not in cluster.logs()
    # Code in a container may bind such a handle too (it leaves any building to the node).
    assert _call(cluster, "print(C.greeting_through_with_options.remote())") == "from-a-container"


@pytest.mark.timeout(900)
def test_two_deploys_of_a_new_image_build_it_once(cluster: Cluster, deployed: str, tmp_path: Path) -> None:
    marker = f"corral-dedup-{secrets.token_hex(6)}"  # a step no earlier run has cached
    app = tmp_path / "dedup_app.py"
    app.write_text(textwrap.dedent(f"""
        import corral

        app = corral.App("images-dedup")

        @app.cls(image=corral.Image.debian_slim().run_commands("sleep 2 && echo {marker}"))
        class Dedup:
            @corral.method()
            def ping(self) -> str:
                return "pong"
    """))
    env = cluster.env()
    command = [sys.executable, "-m", "corral.cli", "deploy", str(app)]
    processes = [subprocess.Popen([*command, "--name", f"images-dedup-{i}"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    built = [stderr for _out, stderr in outputs if f"building: run sleep 2 && echo {marker}" in stderr]
    assert len(built) == 1, outputs  # one build; the other deploy waited and found the layer cached
    assert [title for title in _layers().values() if marker in title] == [f"run sleep 2 && echo {marker}"]


@pytest.mark.timeout(900)
def test_second_deploy_reuses_every_layer(cluster: Cluster, deployed: str) -> None:
    before = _layers()
    again = cluster.corral("deploy", str(APPS / "image_app.py"), "--name", "images", timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    steps = [line for line in again.stderr.splitlines() if " step " in line]
    assert steps and all(": " in line and " cached: " in line for line in steps), again.stderr
    assert "building" not in again.stderr
    # No layer of this image was built again (other builds on the machine may add their own).
    assert not [title for key, title in _layers().items() if key not in before and title in IMAGE_APP_STEPS]
    # `corral image list` shows every node's layers; `rm` of an unknown prefix removes nothing.
    listed = cluster.corral("image", "list")
    assert listed.returncode == 0 and "apt install jq" in listed.stdout and "pip install pyfiglet==1.0.2" in listed.stdout, listed.stdout
    removed = cluster.corral("image", "rm", "no-such-layer")
    assert removed.returncode == 0 and "Removed 0 image layer(s)" in removed.stdout, removed.stdout + removed.stderr
    assert set(before) <= set(_layers())


@pytest.mark.timeout(900)
def test_a_failing_step_fails_the_deploy_with_its_name(cluster: Cluster, deployed: str) -> None:
    result = cluster.corral("deploy", str(APPS / "image_fail_app.py"), "--name", "images-failing", timeout=300)
    assert result.returncode != 0
    assert "ImageBuildError" in result.stderr and FAILING_STEP in result.stderr, result.stderr
    assert "corral-image-step-output" in result.stderr  # the tail of the step's log
    assert not [title for title in _layers().values() if "corral-image-step-output" in title]  # no half-built layer
    root = image_store.default_root(Path("/nonexistent")) / "layers"
    assert not list(root.glob("*.tmp-*"))


@pytest.mark.timeout(900)
def test_snapshot_class_with_an_image_restores_inside_it(cluster: Cluster, deployed: str, events: Path) -> None:
    require_snapshot_prerequisites()  # root and a criu binary, not the detection under test
    import corral

    client = client_for(cluster)
    snap = corral.Cls.from_name("images", "SnapInImage", client=client)(events=str(events))
    first = snap.describe.remote()
    assert first["banner"] and first["python"] == "/opt/venv/bin/python"
    wait_for(lambda: any(s.image.class_name == "SnapInImage" for s in
                         client.call(client.stub.ListSnapshots, control_pb2.ListSnapshotsRequest()).snapshots),
             timeout=60, message="the snapshot taken")
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: snap.describe.remote(hold_s=2.0), range(3)))
    restored = [c for c in containers(client, "images", "SnapInImage") if c.restored_from_snapshot]
    assert restored, results
    for result in results:
        assert result["banner"] and result["python"] == "/opt/venv/bin/python" and result["pid"] == 1
    assert len([line for line in read_events(events) if line.startswith("snap ")]) == 1
