"""The embedded cluster: a control plane and one runtime node in one process, on 127.0.0.1.

`corral up` runs it in the foreground. `python -m corral._embedded --background` is what the SDK
starts when no server is configured: it prints one JSON line with its address and token, then
runs until its stdin closes (its parent exited).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from corral._home import SERVER_FILE, TOKEN_FILE, corral_home
from corral_protocol import env

DEFAULT_PORT = 7470
DEFAULT_HTTP_PORT = 7471
LOCK_FILE = "server.lock"


class HomeBusy(Exception):
    pass


def lock_home(home: Path) -> IO[str]:
    """Hold an exclusive lock on the home directory's state for this process's life."""
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    handle = open(home / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise HomeBusy(f"another Corral server is already running with its state in {home}") from None
    return handle


async def run_cluster(
    home: Path,
    host: str,
    port: int,
    stop: asyncio.Event,
    announce: Callable[[str, str, str, Path], None],
    advertise: bool,
    with_node: bool = True,
    http_port: int | None = 0,
    tls: Any = None,
    pinned_ca: str = "",
    state_location: Any = None,
) -> None:
    """`tls`: a `corral_scheduler.tls.TlsFiles` (None: plaintext); `pinned_ca`: the certificate
    clients on this host pin (a self-signed one), recorded in server.json; `state_location`: a
    `corral_scheduler.state_url.StateLocation` (None: SQLite under `home/state`)."""
    from corral_runtime.node import NodeDaemon
    from corral_scheduler.auth import load_or_create_token
    from corral_scheduler.join_tokens import JOIN_TOKENS_FILE, JoinTokenBook
    from corral_scheduler.server import serve

    token = load_or_create_token(home / TOKEN_FILE)
    server = await serve(home / "state", token, host, port, http_port=http_port, tls=tls, state_location=state_location,
                         join_tokens=JoinTokenBook(home / JOIN_TOKENS_FILE))
    node: NodeDaemon | None = None
    node_task: asyncio.Task[None] | None = None
    if with_node:
        node = NodeDaemon(server.plane.control_url, token, home / "node", name=f"{socket.gethostname()}-local")
        node_task = asyncio.create_task(node.run())
        while not any(n.connected for n in server.plane.nodes.values()):
            if node_task.done():
                node_task.result()
            await asyncio.sleep(0.01)
    server_file = home / SERVER_FILE
    if advertise:
        record = {"url": server.url, "http_url": server.http_url, "pid": os.getpid()}
        if pinned_ca:
            record["ca"] = pinned_ca
        server_file.write_text(json.dumps(record))
    try:
        announce(server.url, server.http_url, token, home)
        await stop.wait()
    finally:
        if advertise:
            with contextlib.suppress(FileNotFoundError):
                server_file.unlink()
        await server.plane.stop_all_containers(timeout=server.plane.STOP_GRACE_S + 5)
        if node is not None and node_task is not None:
            await node.shutdown(grace_s=5)
            node_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, SystemExit):
                await node_task
        await server.stop()


def up(
    host: str = "127.0.0.1", port: int = DEFAULT_PORT, home: Path | None = None, with_node: bool = True,
    http_port: int = DEFAULT_HTTP_PORT, tls_cert: str | None = None, tls_key: str | None = None,
    tls_self_signed: bool = False, insecure: bool = False, state_url: str | None = None,
) -> int:
    """`corral up`: run in the foreground until Ctrl-C or SIGTERM.

    Listening beyond loopback needs TLS (`tls_cert` + `tls_key`, or `tls_self_signed`) or an
    explicit `insecure`. The state goes where `state_url` (else `CORRAL_STATE_URL`) says, by
    default SQLite under `home/state`."""
    from corral_scheduler.secret_box import SecretKeyError
    from corral_scheduler.state_db import StateStoreError
    from corral_scheduler.state_url import StateUrlError, parse_state_url
    from corral_scheduler.tls import TlsFiles, is_loopback, self_signed

    home = home or corral_home()
    try:
        state_location = parse_state_url(state_url or os.environ.get(env.CORRAL_STATE_URL), home / "state")
    except StateUrlError as err:
        print(f"corral up: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    if bool(tls_cert) != bool(tls_key):
        print("corral up: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    wants_tls = bool(tls_cert) or tls_self_signed
    if not is_loopback(host) and not wants_tls and not insecure:
        print(
            f"corral up: --host {host} listens beyond this machine, and without TLS the token and every payload would "
            "cross the network in plaintext. Pass --tls-cert FILE --tls-key FILE, or --tls-self-signed (clients pin "
            f"{home / 'tls' / 'cert.pem'} with {env.CORRAL_TLS_CA}), or --insecure to serve plaintext anyway.",
            file=sys.stderr,
        )
        return 2
    if not is_loopback(host) and insecure and not wants_tls:
        print(f"corral up: WARNING: serving plaintext gRPC and HTTP on {host} (--insecure)", file=sys.stderr)
    try:
        lock = lock_home(home)
    except HomeBusy as err:
        print(f"corral up: {err}", file=sys.stderr)
        return 1
    tls = None
    pinned_ca = ""
    if tls_cert and tls_key:
        tls = TlsFiles(Path(tls_cert), Path(tls_key))
    elif tls_self_signed:
        tls = self_signed(home / "tls", host)
        pinned_ca = str(tls.cert)

    running = False

    def announce(url: str, http_url: str, token: str, state: Path) -> None:
        nonlocal running
        running = True
        print(
            f"Corral is running at {url}\n  web endpoints: {http_url}\n  state: {state_location.describe()}\n"
            f"  home: {state}\n  token: {state / TOKEN_FILE}\n"
            "Press Ctrl-C to stop.", flush=True,
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        cluster = asyncio.create_task(run_cluster(
            home, host, port, stop, announce, advertise=True, with_node=with_node, http_port=http_port, tls=tls,
            pinned_ca=pinned_ca, state_location=state_location,
        ))

        def on_signal() -> None:
            stop.set()
            if not running:  # still starting, or a standby waiting for the leader lease: nothing to stop gracefully
                cluster.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        with contextlib.suppress(asyncio.CancelledError):
            await cluster

    try:
        asyncio.run(main())
    except (OSError, ValueError, SecretKeyError, StateStoreError) as err:  # a busy port; a bad setting; an unusable key file; unreachable state
        print(f"corral up: {err}", file=sys.stderr)
        return 1
    finally:
        lock.close()
    print("Corral stopped.", flush=True)
    return 0


def background(home: Path) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent's Ctrl-C is the parent's to handle
    logging.basicConfig(level=logging.WARNING, format="corral: %(levelname)s %(message)s", stream=sys.stderr)
    announce_to = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything else printed goes to stderr, never into the announcement pipe
    temporary: tempfile.TemporaryDirectory[str] | None = None
    try:
        lock = lock_home(home)
    except HomeBusy:
        temporary = tempfile.TemporaryDirectory(prefix="corral-")
        home = Path(temporary.name)
        lock = lock_home(home)

    def announce(url: str, http_url: str, token: str, state: Path) -> None:
        announce_to.write(json.dumps({"url": url, "http_url": http_url, "token": token, "home": str(state)}) + "\n")
        announce_to.flush()
        announce_to.close()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def watch_stdin() -> None:
            with contextlib.suppress(Exception):
                while sys.stdin.buffer.read(65536):
                    pass
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=watch_stdin, daemon=True).start()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await run_cluster(home, "127.0.0.1", 0, stop, announce, advertise=False)

    try:
        asyncio.run(main())
    finally:
        lock.close()
        if temporary is not None:
            temporary.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corral._embedded")
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--background", action="store_true")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT)
    args = parser.parse_args(argv)
    if args.background:
        return background(args.home or corral_home())
    return up(args.host, args.port, args.home, http_port=args.http_port)


if __name__ == "__main__":
    raise SystemExit(main())
