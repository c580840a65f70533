"""Schedules end to end (issue 14, item 4): a deployed function runs by itself, `corral app list`
shows its next run, a bad cron expression is refused at deploy, and the next run survives a
control-plane restart (it is read back, not recomputed)."""

from __future__ import annotations

from pathlib import Path

from conftest import Cluster, read_events, start_cluster, wait_for
from corral_protocol.v1 import control_pb2
from e2e_helpers import client_for

APP = '''
import corral

app = corral.App("{name}")


@app.function(schedule={schedule})
def tick() -> None:
    with open({events!r}, "a") as f:
        f.write("tick\\n")
'''


def write_app(tmp_path: Path, name: str, schedule: str, events: Path) -> Path:
    path = tmp_path / f"{name.replace('-', '_')}.py"
    path.write_text(APP.format(name=name, schedule=schedule, events=str(events)))
    return path


def next_runs(cluster: Cluster, name: str) -> list[control_pb2.ScheduledRun]:
    client = client_for(cluster)
    (app,) = [a for a in client.call(client.stub.ListApps, control_pb2.ListAppsRequest()).apps if a.name == name]
    return list(app.next_runs)


def test_a_deployed_function_runs_on_its_period_and_the_cli_shows_the_next_run(cluster: Cluster, tmp_path: Path, events: Path) -> None:
    source = write_app(tmp_path, "sched-period", "corral.Period(seconds=1)", events)
    deployed = cluster.corral("deploy", str(source))
    assert deployed.returncode == 0, deployed.stderr
    wait_for(lambda: len(read_events(events)) >= 2, timeout=60, message="two scheduled runs")
    listed = cluster.corral("app", "list")
    (row,) = [line for line in listed.stdout.splitlines() if "sched-period" in line]
    assert "tick@" in row and "NEXT RUN" in listed.stdout, listed.stdout
    (run,) = next_runs(cluster, "sched-period")
    assert run.function == "tick" and run.schedule == "every 1s"
    stopped = cluster.corral("app", "stop", "sched-period")
    assert stopped.returncode == 0, stopped.stderr


def test_a_bad_cron_expression_is_refused_at_deploy(cluster: Cluster, tmp_path: Path, events: Path) -> None:
    source = write_app(tmp_path, "sched-bad", 'corral.Cron("61 * * * *")', events)
    refused = cluster.corral("deploy", str(source))
    assert refused.returncode != 0
    assert "invalid cron expression" in refused.stderr + refused.stdout


def test_the_next_run_survives_a_restart(fresh_cluster: Cluster, tmp_path: Path, events: Path) -> None:
    # A period, not a cron: recomputed after the restart, its next run would move (a cron's would not).
    source = write_app(tmp_path, "sched-cron", "corral.Period(hours=1)", events)
    deployed = fresh_cluster.corral("deploy", str(source))
    assert deployed.returncode == 0, deployed.stderr
    wait_for(lambda: bool(next_runs(fresh_cluster, "sched-cron")), message="the schedule to be installed")
    (before,) = next_runs(fresh_cluster, "sched-cron")
    assert before.schedule == "every 3600s"
    assert fresh_cluster.stop() == 0, fresh_cluster.logs()
    restarted = start_cluster(fresh_cluster.home, fresh_cluster.port)
    try:
        wait_for(lambda: bool(next_runs(restarted, "sched-cron")), message="the schedule after the restart")
        (after,) = next_runs(restarted, "sched-cron")
        assert after.next_run_at == before.next_run_at
    finally:
        restarted.stop()
