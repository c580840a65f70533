"""Control plane and runtime node as separate processes, joined by URL and token."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import APPS, free_port, wait_for


def test_a_node_joins_a_control_plane_started_without_one(tmp_path: Path) -> None:
    home = tmp_path / "control"
    port = free_port()
    env = dict(os.environ, CORRAL_HOME=str(home), PYTHONPATH=str(APPS))
    env.pop("CORRAL_SERVER_URL", None)
    env.pop("CORRAL_TOKEN", None)
    control = subprocess.Popen([sys.executable, "-m", "corral.cli", "up", "--port", str(port), "--http-port", "0", "--no-node"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    node = None
    try:
        wait_for(lambda: (home / "server.json").exists(), message="control plane start")
        token = (home / "token").read_text().strip()
        url = f"grpc://127.0.0.1:{port}"
        client_env = dict(env, CORRAL_SERVER_URL=url, CORRAL_TOKEN=token, CORRAL_HOME=str(tmp_path / "client-home"))
        nodes = subprocess.run([sys.executable, "-m", "corral.cli", "node", "list"], env=client_env, capture_output=True, text=True)
        assert nodes.returncode == 0 and "-local" not in nodes.stdout

        node_env = dict(env, CORRAL_HOME=str(tmp_path / "node-home"))
        # The token never goes on the command line (every user of the host can read argv): here it comes
        # from the environment; below, from a file.
        node = subprocess.Popen(
            [sys.executable, "-m", "corral_runtime.node_cli", "--server", url, "--name", "worker-host",
             "--work-dir", str(tmp_path / "node-work")],
            env=dict(node_env, CORRAL_TOKEN=token), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        wait_for(
            lambda: "worker-host" in subprocess.run([sys.executable, "-m", "corral.cli", "node", "list"], env=client_env,
                                                    capture_output=True, text=True).stdout,
            message="node registration",
        )
        program = (
            "import api_app\n"
            "with api_app.app.run():\n"
            "    print(api_app.Model(name='remote-node', scale=7).predict.remote(6)['y'])\n"
        )
        result = subprocess.run([sys.executable, "-c", program], env=client_env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "42"

        assert token.encode() not in Path(f"/proc/{node.pid}/cmdline").read_bytes()

        wrong = tmp_path / "wrong-token"
        wrong.write_text("wrong\n")
        wrong.chmod(0o600)
        bad = subprocess.run(
            [sys.executable, "-m", "corral_runtime.node_cli", "--server", url, "--token-file", str(wrong), "--work-dir", str(tmp_path / "bad")],
            env=node_env, capture_output=True, text=True, timeout=60,
        )
        assert bad.returncode != 0 and "refused this node" in bad.stderr

        on_argv = subprocess.run(
            [sys.executable, "-m", "corral_runtime.node_cli", "--server", url, "--token", token, "--work-dir", str(tmp_path / "argv")],
            env=node_env, capture_output=True, text=True, timeout=60,
        )
        assert on_argv.returncode == 2 and "--token is not accepted" in on_argv.stderr and "--token-file" in on_argv.stderr
    finally:
        for process in (node, control):
            if process is not None and process.poll() is None:
                process.send_signal(2)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
