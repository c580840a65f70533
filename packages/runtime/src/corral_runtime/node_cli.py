"""`corral-node`: run a runtime node that joins a control plane.

    corral-node --server grpcs://CONTROL:7470 --tls-ca ca.pem --token-file /etc/corral/join-token \
        --advertise-host 10.0.0.7 [--name NAME] [--simulate-gpus H100:8]
    CORRAL_TOKEN=... corral-node --server grpc://127.0.0.1:7470 [--name NAME]

The token is a join token (`corral node join-token create` on the control plane's host), good
only for joining as a node, or the admin token. It comes from a file (`--token-file`) or the
environment (`CORRAL_TOKEN`), never from the command line: every user of the host can read a
process's argv (`ps`, /proc/PID/cmdline), while a file can be mode 0600 and a process's
environment is readable only by its owner.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import stat
import sys
from pathlib import Path
from typing import Any

from corral_protocol import env as corral_env
from corral_protocol import framing, gpus, transport
from corral_runtime import build_limits, criu, runtimes, work_dir_claim
from corral_runtime.node import LAZY_PAGES_ENV, NodeDaemon

_TOKEN_ON_ARGV = (
    "--token is not accepted: a token on the command line is visible to every user of this host (ps). "
    f"Put it in a file readable only by you and pass --token-file PATH, or set {corral_env.CORRAL_TOKEN}"
)


def read_token(token_file: str | None, environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """The admin token from `token_file` (first line, stripped), else from CORRAL_TOKEN; '' if neither.

    A file that other users can read is used, with a warning."""
    if token_file:
        path = Path(token_file)
        try:
            mode = path.stat().st_mode
            token = path.read_text().strip()
        except OSError as err:
            raise SystemExit(f"corral-node: cannot read --token-file {token_file}: {err.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            print(f"corral-node: warning: {token_file} is readable by other users; chmod 600 it", file=sys.stderr)
        if not token:
            raise SystemExit(f"corral-node: --token-file {token_file} is empty")
        return token.splitlines()[0]
    return environ.get(corral_env.CORRAL_TOKEN, "")


def _quiet_exit(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A node that gives up (refused, or a URL or certificate that can never work) exits with its
    message alone, not with asyncio's shutdown traceback around it."""
    if isinstance(context.get("exception"), SystemExit):
        return
    loop.default_exception_handler(context)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="corral-node", description="Run a Corral runtime node.")
    p.add_argument("--server", default=os.environ.get(corral_env.CORRAL_SERVER_URL),
                   help="control plane URL: grpcs://host:port (TLS) or grpc://host:port (plaintext)")
    p.add_argument(
        "--tls-ca", default=os.environ.get(corral_env.CORRAL_TLS_CA) or None, metavar="FILE",
        help=f"PEM certificate(s) to trust for a grpcs:// control plane (default ${corral_env.CORRAL_TLS_CA}, "
             "else the system's roots); the node's containers trust the same",
    )
    p.add_argument(
        "--token-file", default=None,
        help="file holding a join token (`corral node join-token create`) or the admin token (mode 0600); "
             f"default: ${corral_env.CORRAL_TOKEN}",
    )
    p.add_argument("--token", default=None, help=argparse.SUPPRESS)  # refused with an explanation
    p.add_argument("--name", default=None, help="node name (default: hostname)")
    p.add_argument("--work-dir", default=None, help="where bundles and container files live")
    p.add_argument(
        "--advertise-host", default=os.environ.get(corral_env.CORRAL_NODE_ADVERTISE_HOST, "127.0.0.1"),
        help="address clients reach this node's containers on for direct calls (default 127.0.0.1)",
    )
    p.add_argument(
        "--snapshot-lazy-pages", choices=criu.LAZY_PAGES_SETTINGS, default=os.environ.get(LAZY_PAGES_ENV) or "auto",
        help="restore memory snapshots with CRIU lazy pages (userfaultfd): pages arrive on first touch and in the "
             f"background; auto uses them when CRIU and the kernel support them (default auto, or ${LAZY_PAGES_ENV})",
    )
    p.add_argument(
        "--simulate-gpus", default=os.environ.get(corral_env.CORRAL_SIMULATE_GPUS) or None, metavar="SPEC",
        help="declare GPUs that do not exist instead of reading NVML, e.g. H100:8 or H100:4,A100-80GB:4: for tests and "
             f"capacity planning only; `corral node list` shows them as simulated (default ${corral_env.CORRAL_SIMULATE_GPUS})",
    )
    p.add_argument(
        "--isolation", choices=runtimes.ISOLATION_SETTINGS, default=os.environ.get(corral_env.CORRAL_NODE_ISOLATION) or "auto",
        help="run containers with runc (auto: when the node is root and runc is installed) or as plain processes "
             f"with no isolation (none); default auto, or ${corral_env.CORRAL_NODE_ISOLATION}",
    )
    p.add_argument(
        "--volume", action="append", default=[],
        help="a host directory every container sees, HOST[:CONTAINER][:ro|rw] (read-write unless :ro); repeatable "
             f"(also ${corral_env.CORRAL_NODE_VOLUMES}, comma-separated)",
    )
    build_limits.add_arguments(p)
    p.add_argument(
        "--warm-pool", type=int, default=None, metavar="N",
        help="isolated nodes: keep N generic containers started ahead, each used once, for faster cold starts "
             f"(default ${corral_env.CORRAL_NODE_WARM_POOL}, else {corral_env.DEFAULT_WARM_POOL}; 0 turns the pool off)",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    p = parser()
    args = p.parse_args(argv)
    if args.token is not None:
        p.error(_TOKEN_ON_ARGV)
    if args.simulate_gpus:
        try:
            gpus.parse_simulated(args.simulate_gpus)
        except gpus.GpuSpecError as err:
            p.error(f"--simulate-gpus: {err}")
    if args.warm_pool is not None and args.warm_pool < 0:
        p.error(f"--warm-pool: {args.warm_pool} is negative (0 turns the pool off)")
    try:
        limits = build_limits.from_arguments(args)
    except build_limits.BuildLimitError as err:
        p.error(str(err))
    try:
        framing.idle_timeout_s()  # a setting every container reads: refused here, not in each of them
    except ValueError as err:
        p.error(str(err))
    token = read_token(args.token_file)
    if not args.server or not token:
        p.error(f"--server (or {corral_env.CORRAL_SERVER_URL}) and a token (--token-file or {corral_env.CORRAL_TOKEN}) are required")
    try:
        if transport.server_address(args.server).tls:
            transport.trusted_roots(args.tls_ca)
    except transport.TransportError as err:
        p.error(str(err))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    work_dir = Path(args.work_dir or Path.home() / ".local" / "share" / "corral-node")
    try:
        daemon = NodeDaemon(args.server, token, work_dir, name=args.name, advertise_host=args.advertise_host,
                            lazy_pages=args.snapshot_lazy_pages, simulate_gpus=args.simulate_gpus, isolation=args.isolation,
                            volumes=",".join(args.volume) if args.volume else None, build_limits=limits, tls_ca=args.tls_ca,
                            warm_pool=args.warm_pool)
    except work_dir_claim.WorkDirInUseError as err:
        raise SystemExit(f"corral-node: {err}") from None

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_quiet_exit)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner = asyncio.create_task(daemon.run())
        await asyncio.wait([runner, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        await daemon.shutdown()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, SystemExit):
            await runner

    asyncio.run(serve())


if __name__ == "__main__":
    main()
