"""Issue 14's definition of done: a typical Modal app (a function with a cron schedule, a class with
a streaming LLM-style endpoint, a batch job whose function fans out with `map` to a class) runs
on Corral with only the import changed."""

from __future__ import annotations

import httpx

import corral
from conftest import APPS, Cluster, wait_for
from corral_protocol.v1 import control_pb2
from e2e_helpers import client_for


def test_a_typical_modal_app_deploys_serves_streams_and_fans_out(cluster: Cluster) -> None:
    deployed = cluster.corral("deploy", str(APPS / "typical_modal_app.py"))
    assert deployed.returncode == 0, deployed.stderr
    client = client_for(cluster)

    def typical() -> control_pb2.AppInfo:
        (app,) = [a for a in client.call(client.stub.ListApps, control_pb2.ListAppsRequest()).apps if a.name == "typical"]
        return app

    wait_for(lambda: bool(typical().next_runs), message="the cron schedule")
    assert [r.function for r in typical().next_runs] == ["hourly_report"]
    assert sorted(typical().functions) == ["batch_job", "hourly_report"] and list(typical().classes) == ["LLM"]

    LLM = corral.Cls.from_name("typical", "LLM", client=client)
    assert "".join(LLM(temperature=0.2).generate.remote_gen("hi")) == "Hello, world!"
    assert corral.Function.from_name("typical", "batch_job", client=client).remote(["a", "bb", "ccc"]) == 6

    url = next(line.split(": ", 1)[1] for line in deployed.stdout.splitlines() if "LLM.complete" in line)
    with httpx.stream("POST", url, json={"prompt": "hi"}, timeout=60) as response:
        assert response.status_code == 200
        assert "".join(response.iter_text()) == "Hello, world!"

    ran = cluster.corral("run", str(APPS / "typical_modal_app.py"))
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[-2:] == ["Hello, world!", "6"]
