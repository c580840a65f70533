"""The `corral` command line."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import importlib.util
import inspect
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from corral import _logs
from corral._cli_format import age as _age
from corral._cli_format import table
from corral._cli_images import add_image_commands
from corral._cli_join import add_join_token_commands
from corral._cli_nodes import add_node_commands, node_state
from corral._cli_stores import add_store_commands
from corral._client import default_client
from corral._home import corral_home
from corral.app import App
from corral.exception import Error, InvalidError
from corral_protocol import env as corral_env
from corral_protocol import gpus
from corral_protocol.v1 import common_pb2, control_pb2


def import_target(ref: str) -> tuple[ModuleType, str | None]:
    """`path/to/app.py`, `path/to/app.py::name`, or a module name `pkg.app[::name]`."""
    location, _, name = ref.partition("::")
    path = Path(location)
    if path.suffix == ".py" or path.exists():
        if not path.is_file():
            raise InvalidError(f"{location} is not a file")
        path = path.resolve()
        sys.path.insert(0, str(path.parent))
        module_name = path.stem
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    else:
        sys.path.insert(0, str(Path.cwd()))
        module = importlib.import_module(location)
    return module, name or None


def find_app(module: ModuleType, name: str | None) -> App:
    apps = {k: v for k, v in vars(module).items() if isinstance(v, App)}
    if name and isinstance(vars(module).get(name), App):
        return vars(module)[name]
    if len(apps) == 1:
        return next(iter(apps.values()))
    if not apps:
        raise InvalidError(f"{module.__name__} defines no corral.App")
    raise InvalidError(f"{module.__name__} defines several apps ({', '.join(apps)}); pick one with FILE::NAME")


def entrypoint_arguments(function: Callable[..., Any], argv: Sequence[str]) -> dict[str, Any]:
    """Turn `--name value` flags into keyword arguments, typed by the entrypoint's annotations."""
    parser = argparse.ArgumentParser(prog=f"corral run ...::{function.__name__}")
    for param in inspect.signature(function).parameters.values():
        annotation = param.annotation if param.annotation is not inspect.Parameter.empty else str
        if isinstance(annotation, str):
            annotation = {"int": int, "float": float, "bool": bool, "str": str}.get(annotation, str)
        flag = "--" + param.name.replace("_", "-")
        required = param.default is inspect.Parameter.empty
        if annotation is bool:
            parser.add_argument(flag, dest=param.name, action=argparse.BooleanOptionalAction, default=None if required else param.default, required=required)
        else:
            parser.add_argument(flag, dest=param.name, type=annotation, required=required, default=None if required else param.default)
    return vars(parser.parse_args(list(argv)))


def cmd_up(args: argparse.Namespace) -> int:
    try:
        import corral_runtime  # noqa: F401
        import corral_scheduler  # noqa: F401
        from corral._embedded import up
    except ImportError:
        print("corral up needs the server side: pip install 'corral[local]'", file=sys.stderr)
        return 1
    if args.simulate_gpus:
        try:
            gpus.parse_simulated(args.simulate_gpus)
        except gpus.GpuSpecError as err:
            print(f"corral up: --simulate-gpus: {err}", file=sys.stderr)
            return 2
        os.environ[corral_env.CORRAL_SIMULATE_GPUS] = args.simulate_gpus  # read by the embedded node's inventory
    if args.node_timeout is not None:
        if not (math.isfinite(args.node_timeout) and args.node_timeout > 0):
            print(f"corral up: --node-timeout must be a positive number of seconds, got {args.node_timeout:g}", file=sys.stderr)
            return 2
        os.environ[corral_env.CORRAL_NODE_TIMEOUT_S] = repr(args.node_timeout)  # read by the control plane
    return up(args.host, args.port, with_node=not args.no_node, http_port=args.http_port, tls_cert=args.tls_cert,
              tls_key=args.tls_key, tls_self_signed=args.tls_self_signed, insecure=args.insecure, state_url=args.state_url)


def cmd_run(args: argparse.Namespace) -> int:
    module, name = import_target(args.target)
    app = find_app(module, name if isinstance(vars(module).get(name or ""), App) else None)
    entrypoints = app.local_entrypoints
    if name and name in entrypoints:
        entry = entrypoints[name]
    elif len(entrypoints) == 1:
        entry = next(iter(entrypoints.values()))
    elif not entrypoints:
        raise InvalidError(f"{args.target} has no @app.local_entrypoint() to run")
    else:
        raise InvalidError(f"{args.target} has several entrypoints ({', '.join(entrypoints)}); pick one with FILE::NAME")
    kwargs = entrypoint_arguments(entry, args.args)
    with contextlib.ExitStack() as stack:
        stack.enter_context(app.run())
        assert app.running is not None
        # The app's container output streams to this terminal while it runs (exit hooks included:
        # the follower stops after the app), through the control plane, so from any host.
        follower = _logs.Follower(app.running.client, app.running.app_id, sys.stderr)
        stack.callback(follower.stop)
        follower.start()
        result = entry(**kwargs)
        if inspect.isawaitable(result):
            import asyncio

            asyncio.run(_await(result))
    return 0


async def _await(value: Any) -> Any:
    return await value


def cmd_deploy(args: argparse.Namespace) -> int:
    module, name = import_target(args.target)
    app = find_app(module, name)
    deployed = app.deploy(args.name)
    print(f"Deployed app {args.name or app.name!r} as {deployed.app_id}, version {deployed.version}.")
    if deployed.client.is_embedded:
        print(f"Note: no Corral server is running, so the app was stored in {corral_home()} and will serve once `corral up` starts.")
    for cls_name in deployed.class_defs:
        print(f"  {cls_name}: corral.Cls.from_name({(args.name or app.name)!r}, {cls_name!r})")
    for label, url in sorted(deployed.web_urls.items()):
        print(f"  {label}: {url}")
    return 0


def cmd_app_list(args: argparse.Namespace) -> int:
    client = default_client()
    apps = client.call(client.stub.ListApps, control_pb2.ListAppsRequest(include_stopped=args.all)).apps
    state_names = {control_pb2.APP_STATE_RUNNING: "running", control_pb2.APP_STATE_DEPLOYED: "deployed", control_pb2.APP_STATE_STOPPED: "stopped"}
    rows = [
        (a.app_id, a.name, state_names.get(a.state, "?"), a.version, a.containers, ",".join(a.classes) or "-", ",".join(a.functions) or "-",
         _next_runs(a.next_runs), _age(a.created_at))
        for a in apps
    ]
    print(table(("APP ID", "NAME", "STATE", "VERSION", "CONTAINERS", "CLASSES", "FUNCTIONS", "NEXT RUN", "AGE"), rows))
    return 0


def _next_runs(runs: Sequence[control_pb2.ScheduledRun]) -> str:
    """The scheduled functions' next runs, soonest first, in UTC."""
    ordered = sorted(runs, key=lambda r: r.next_run_at)
    return ",".join(
        f"{r.function}@{datetime.datetime.fromtimestamp(r.next_run_at, datetime.timezone.utc):%Y-%m-%d %H:%M:%S}Z" for r in ordered
    ) or "-"


def _print_logs(request: control_pb2.GetLogsRequest) -> int:
    for line in _logs.lines(default_client(), request):
        print(_logs.format_line(line), flush=request.follow)
    return 0


def cmd_app_logs(args: argparse.Namespace) -> int:
    return _print_logs(control_pb2.GetLogsRequest(app=args.name, follow=args.follow, tail=args.tail, input_id=args.input or ""))


def cmd_container_logs(args: argparse.Namespace) -> int:
    return _print_logs(control_pb2.GetLogsRequest(container_id=args.container_id, follow=args.follow, tail=args.tail))


def cmd_app_stop(args: argparse.Namespace) -> int:
    client = default_client()
    response = client.call(client.stub.StopApp, control_pb2.StopAppRequest(app=args.name))
    print(f"Stopped app {args.name} ({response.app_id}).")
    return 0


def cmd_container_list(args: argparse.Namespace) -> int:
    client = default_client()
    containers = client.call(client.stub.ListContainers, control_pb2.ListContainersRequest()).containers
    states = {v: k.removeprefix("CONTAINER_STATE_").lower() for k, v in control_pb2.ContainerState.items()}
    # Grouped by service (one class bound to one parameter set and options); LOAD is running/max inputs.
    rows = [
        (c.app_name, c.class_name, c.service_id, c.container_id, states.get(c.state, "?"), f"{c.running_inputs}/{c.max_inputs}",
         c.inputs_served,
         ",".join(f"{p.name}={getattr(p.value, p.value.WhichOneof('kind') or 'string_value')!r}" for p in c.parameters) or "-",
         c.node_id, _age(c.started_at), *_usage_columns(c))
        for c in sorted(containers, key=lambda c: (c.app_name, c.class_name, c.service_id, c.started_at))
    ]
    print(table(("APP", "CLASS", "SERVICE", "CONTAINER ID", "STATE", "LOAD", "SERVED", "PARAMETERS", "NODE", "AGE", "MEMORY", "CPU"), rows))
    if args.verbose:
        for c in sorted(containers, key=lambda c: (c.app_name, c.class_name, c.service_id, c.started_at)):
            print(f"\n{c.container_id} ({c.class_name}):")
            for line in c.history:
                print(f"  {line}")
    return 0


def _usage_columns(container: control_pb2.ContainerInfo) -> tuple[str, str]:
    """MEMORY (used/limit MiB) and CPU (cores used/limit), from the node's latest report; "-" when
    the node reports none (containers without isolation)."""
    if not container.HasField("usage"):
        return "-", "-"
    usage = container.usage
    memory = f"{usage.memory_bytes / 2**20:.0f}"
    memory += f"/{usage.memory_limit_bytes / 2**20:.0f} MiB" if usage.memory_limit_bytes else " MiB"
    cpu = f"{usage.cpu_cores:.2f}" + (f"/{usage.cpu_limit:.2f}" if usage.cpu_limit else "")
    return memory, cpu


def cmd_node_list(args: argparse.Namespace) -> int:
    client = default_client()
    nodes = client.call(client.stub.ListNodes, control_pb2.ListNodesRequest()).nodes
    rows = [
        (n.node_id, n.name, node_state(n), f"{n.cpu_reserved:g}/{n.inventory.cpu:g}", f"{n.memory_reserved_mib}/{n.inventory.memory_mib} MiB",
         _gpu_summary(n), n.containers)
        for n in nodes
    ]
    print(table(("NODE ID", "NAME", "STATE", "CPU", "MEMORY", "GPUS", "CONTAINERS"), rows))
    # Memory snapshots, one line per node below the table: the reason can be long.
    if nodes:
        print()
    for n in nodes:
        if n.state == control_pb2.NODE_STATE_LOST:
            print(f"{n.name} ({n.node_id}): lost: {n.state_reason}")
            continue
        snap = n.inventory.snapshots
        state = (f"available (criu {snap.criu_version})" if snap.available
                 else f"unavailable ({snap.reason or 'not reported by this node'})")
        print(f"{n.name} ({n.node_id}): snapshots: {state}")
        isolation = n.inventory.isolation
        if isolation.mode == "none":
            print(f"{n.name} ({n.node_id}): isolation: none ({isolation.reason}); containers are plain processes of the node's user")
        elif isolation.mode:
            print(f"{n.name} ({n.node_id}): isolation: {isolation.mode} (cgroup v{isolation.cgroup_version})")
        else:
            print(f"{n.name} ({n.node_id}): isolation: not reported by this node")
        for g in n.inventory.gpus if args.verbose else ():
            mig = {common_pb2.GPU_MIG_MODE_ENABLED: ", MIG on", common_pb2.GPU_MIG_MODE_DISABLED: ", MIG off"}.get(g.mig_mode, "")
            use = "in use" if g.uuid in n.gpus_in_use else "free"
            print(f"  gpu {g.index} {g.uuid} {g.model}: {g.memory_free_mib}/{g.memory_mib} MiB free, "
                  f"{g.utilization_percent}% busy{mig}, {use}")
    return 0


def _gpu_summary(n: control_pb2.NodeInfo) -> str:
    """`6/8 free: 8x NVIDIA H100 80GB HBM3 (simulated)`, or `none`."""
    gpus = n.inventory.gpus
    if not gpus:
        return "none"
    models: dict[str, int] = {}
    for g in gpus:
        models[g.model] = models.get(g.model, 0) + 1
    free = sum(g.uuid not in n.gpus_in_use for g in gpus)
    described = ", ".join(f"{count}x {model}" for model, count in models.items())
    return f"{free}/{len(gpus)} free: {described}" + (" (simulated)" if n.inventory.simulated_gpus else "")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="corral", description="Self-hosted serverless for Python.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("up", help="run the control plane and a runtime node on this machine (foreground)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7470)
    p.add_argument("--no-node", action="store_true", help="run only the control plane; nodes join with corral-node")
    p.add_argument("--http-port", type=int, default=7471, help="port of the web endpoint gateway (0 picks a free one)")
    p.add_argument("--simulate-gpus", default=None, metavar="SPEC",
                   help="the embedded node declares GPUs that do not exist, e.g. H100:8 (tests and capacity planning only)")
    p.add_argument("--node-timeout", type=float, default=None, metavar="SECONDS",
                   help="a node silent this long is lost: its calls retry elsewhere or fail (default 10)")
    p.add_argument("--tls-cert", default=None, help="PEM certificate chain: serve gRPC and the gateway over TLS")
    p.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    p.add_argument("--tls-self-signed", action="store_true",
                   help="serve over TLS with a self-signed pair made once in $CORRAL_HOME/tls (clients pin its cert.pem)")
    p.add_argument("--insecure", action="store_true", help="allow a --host beyond loopback without TLS (plaintext)")
    p.add_argument("--state-url", default=None, metavar="URL",
                   help="where the control plane keeps its state: postgresql://USER@HOST:PORT/DB, or sqlite:///DIR "
                        "(default: $CORRAL_STATE_URL, else SQLite under $CORRAL_HOME/state)")
    p.set_defaults(handler=cmd_up)

    p = sub.add_parser("run", help="run FILE's @app.local_entrypoint() with its app running")
    p.add_argument("target", metavar="FILE[::NAME]")
    p.add_argument("args", nargs=argparse.REMAINDER, help="--flags for the entrypoint's parameters")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("deploy", help="publish FILE's app persistently")
    p.add_argument("target", metavar="FILE[::APP]")
    p.add_argument("--name", default=None, help="deploy under this name instead of the App's")
    p.set_defaults(handler=cmd_deploy)

    app = sub.add_parser("app", help="manage apps").add_subparsers(dest="app_command", required=True)
    p = app.add_parser("list", help="list running and deployed apps")
    p.add_argument("--all", action="store_true", help="include stopped apps")
    p.set_defaults(handler=cmd_app_list)
    p = app.add_parser("logs", help="show an app's container output (stdout and stderr, with time, container, input)")
    p.add_argument("name", help="an app's name (the newest of that name) or id")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until interrupted")
    p.add_argument("--tail", type=int, default=0, help="only the last N stored lines")
    p.add_argument("--input", default=None, help="only the lines of this input (call id)")
    p.set_defaults(handler=cmd_app_logs)
    p = app.add_parser("stop", help="stop an app (its containers run their exit hooks)")
    p.add_argument("name", help="a deployed app's name, or an app id")
    p.set_defaults(handler=cmd_app_stop)

    container = sub.add_parser("container", help="inspect containers").add_subparsers(dest="container_command", required=True)
    p = container.add_parser("list", help="list live containers with their load")
    p.add_argument("--verbose", "-v", action="store_true", help="also show each container's recent lifecycle transitions")
    p.set_defaults(handler=cmd_container_list)
    p = container.add_parser("logs", help="show one container's output")
    p.add_argument("container_id")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until interrupted")
    p.add_argument("--tail", type=int, default=0, help="only the last N stored lines")
    p.set_defaults(handler=cmd_container_logs)

    node = sub.add_parser("node", help="inspect runtime nodes and take them out of service").add_subparsers(dest="node_command", required=True)
    p = node.add_parser("list", help="list nodes with their inventory")
    p.add_argument("--verbose", "-v", action="store_true", help="also each GPU: UUID, memory, utilisation, MIG, in use")
    p.set_defaults(handler=cmd_node_list)
    add_node_commands(node)
    add_join_token_commands(node)

    add_store_commands(sub)
    add_image_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except Error as err:
        print(f"corral: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
