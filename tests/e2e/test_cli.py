"""The `corral` command line: deploy, app list/stop, container list, run; `with app.run()` in plain Python;
the embedded background cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import corral
from conftest import APPS, Cluster, read_events, start_cluster, wait_for
from e2e_helpers import client_for, deploy, pids_with, table_rows

ROOT = APPS.parent.parent


def test_app_list_container_list_and_stop(cluster: Cluster, events: Path) -> None:
    name = "e2e-cli-state"
    deploy(cluster, "deploy_model.py", name)

    listed = cluster.corral("app", "list")
    assert listed.returncode == 0, listed.stderr
    rows = [row for row in table_rows(listed.stdout) if row[1] == name]
    assert len(rows) == 1, listed.stdout
    assert rows[0][2] == "deployed"
    assert "Model" in rows[0][5]

    client = client_for(cluster)
    model = corral.Cls.from_name(name, "Model", client=client).with_options(scaledown_window=600)(events=str(events))
    assert model.bump.remote() == 1
    rows = [row for row in table_rows(cluster.corral("app", "list").stdout) if row[1] == name]
    assert rows[0][4] == "1", rows  # the CONTAINERS column counts the live container

    ctrs = cluster.corral("container", "list")
    assert ctrs.returncode == 0, ctrs.stderr
    rows = [row for row in table_rows(ctrs.stdout) if row[0] == name]
    assert len(rows) == 1, ctrs.stdout
    assert rows[0][1] == "Model"
    assert rows[0][2].startswith("sv-")  # the service
    assert rows[0][4] == "ready"
    assert rows[0][5] == "0/1"  # load: running/max inputs
    assert rows[0][6] == "1"  # inputs served
    assert str(events) in rows[0][7]  # parameters

    stopped = cluster.corral("app", "stop", name)
    assert stopped.returncode == 0, stopped.stderr
    assert f"Stopped app {name}" in stopped.stdout
    listed = cluster.corral("app", "list")
    assert name not in listed.stdout
    assert name in cluster.corral("app", "list", "--all").stdout
    wait_for(lambda: any(e.startswith("exit") for e in read_events(events)), message="the exit hook after `corral app stop`")
    wait_for(lambda: name not in cluster.corral("container", "list").stdout, message="the container to leave the list")

    with pytest.raises(corral.exception.NotFoundError):
        model.bump.remote()  # a handle bound before the stop
    with pytest.raises(corral.exception.NotFoundError):
        corral.Cls.from_name(name, "Model", client=client)().bump.remote()
    again = cluster.corral("app", "stop", name)
    assert again.returncode == 1 and "NotFoundError" in again.stderr


def test_deploy_by_relative_path_and_stop_by_app_id(cluster: Cluster) -> None:
    name = "e2e-cli-relative"
    result = cluster.corral("deploy", "tests/apps/deploy_model.py", "--name", name, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    app_id = result.stdout.split(" as ")[1].split(",")[0]
    assert app_id.startswith("ap-")
    client = client_for(cluster)
    assert corral.Cls.from_name(name, "Model", client=client)().bump.remote() == 1
    stopped = cluster.corral("app", "stop", app_id)
    assert stopped.returncode == 0, stopped.stderr
    assert name not in cluster.corral("app", "list").stdout


def test_deploy_rejects_a_bad_app_name(cluster: Cluster) -> None:
    result = cluster.corral("deploy", str(APPS / "deploy_model.py"), "--name", "not a valid/name")
    assert result.returncode == 1
    assert "InvalidError" in result.stderr
    assert "not a valid/name" not in cluster.corral("app", "list").stdout


def test_stopped_apps_stay_listed_with_all_after_a_restart(fresh_cluster: Cluster) -> None:
    deploy(fresh_cluster, "deploy_model.py", "e2e-cli-history")
    assert fresh_cluster.corral("app", "stop", "e2e-cli-history").returncode == 0
    assert fresh_cluster.stop() == 0
    restarted = start_cluster(fresh_cluster.home, fresh_cluster.port)
    try:
        assert "e2e-cli-history" not in restarted.corral("app", "list").stdout
        rows = [row for row in table_rows(restarted.corral("app", "list", "--all").stdout) if row[1] == "e2e-cli-history"]
        assert [row[2] for row in rows] == ["stopped"], rows
        with pytest.raises(corral.exception.NotFoundError):
            corral.Cls.from_name("e2e-cli-history", "Model", client=client_for(restarted))().bump.remote()
    finally:
        assert restarted.stop() == 0


def test_corral_run_calls_the_local_entrypoint(cluster: Cluster) -> None:
    result = cluster.corral("run", str(APPS / "deploy_entry.py"), "--word", "hi", "--times", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("result: > hi") == 2, result.stdout
    assert "remote-prefix: # hi" in result.stdout
    # The ephemeral app was removed at exit.
    assert "e2e-entry" not in cluster.corral("app", "list").stdout


def test_corral_run_the_hello_example(cluster: Cluster) -> None:
    result = cluster.corral("run", "examples/hello.py", "--name", "Ada", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Hello, Ada! (call 1 in this container)",
        "Hello, Ada! (call 2 in this container)",
        "Bonjour, Ada! (call 1 in this container)",
    ]


def test_corral_run_rejects_unknown_flags(cluster: Cluster) -> None:
    result = cluster.corral("run", str(APPS / "deploy_entry.py"), "--nope", "1")
    assert result.returncode != 0
    assert "--nope" in result.stderr


def test_with_app_run_in_plain_python(cluster: Cluster) -> None:
    result = cluster.python(str(APPS / "deploy_entry.py"), "plain")
    assert result.returncode == 0, result.stderr
    assert "result: > plain" in result.stdout
    assert "remote-prefix: # plain" in result.stdout
    assert "e2e-entry" not in cluster.corral("app", "list").stdout


def _embedded_env(home: Path) -> dict[str, str]:
    env = dict(os.environ, CORRAL_HOME=str(home))
    env.pop("CORRAL_SERVER_URL", None)
    env.pop("CORRAL_TOKEN", None)
    env["PYTHONPATH"] = os.pathsep.join([str(APPS), env.get("PYTHONPATH", "")])
    return env


def test_embedded_cluster_runs_hello_and_goes_away(tmp_path: Path) -> None:
    home = tmp_path / "embedded-home"
    home.mkdir()
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "hello.py")], env=_embedded_env(home), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Hello, world! (call 1 in this container)" in result.stdout
    assert "Hello, world! (call 2 in this container)" in result.stdout
    assert "Bonjour, world! (call 1 in this container)" in result.stdout
    assert not (home / "server.json").exists()  # a background cluster does not advertise itself
    wait_for(lambda: not pids_with(str(home)), timeout=30, message="the embedded cluster and its containers to exit")


def test_embedded_cluster_runs_exit_hooks_at_program_exit(tmp_path: Path, events: Path) -> None:
    home = tmp_path / "embedded-home"
    home.mkdir()
    script = textwrap.dedent(
        f"""
        import lifecycle_app
        with lifecycle_app.app.run():
            tracker = lifecycle_app.Tracker.with_options(scaledown_window=600)(events={str(events)!r})
            print("count", tracker.bump.remote(), tracker.bump.remote())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], env=_embedded_env(home), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "count 1 2" in result.stdout
    lines = [e.split(" ct=")[0] for e in read_events(events)]
    assert lines == ["enter:snap", "enter:base", "enter:setup tag=a", "exit tag=a"]
    wait_for(lambda: not pids_with(str(home)), timeout=30, message="the embedded cluster and its containers to exit")


def test_container_list_verbose_shows_each_containers_story(cluster: Cluster, events: Path) -> None:
    name = "e2e-cli-story"
    deploy(cluster, "deploy_model.py", name)
    model = corral.Cls.from_name(name, "Model", client=client_for(cluster)).with_options(scaledown_window=600)(events=str(events))
    assert model.bump.remote() == 1
    listed = cluster.corral("container", "list", "--verbose")
    assert listed.returncode == 0, listed.stderr
    story = listed.stdout.split("(Model):", 1)[1]
    assert "new -> placed" in story and "placed -> starting" in story and "starting -> ready" in story
    assert cluster.corral("app", "stop", name).returncode == 0
