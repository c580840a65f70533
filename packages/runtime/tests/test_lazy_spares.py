"""Spare lazy-pages daemons (`corral_runtime.lazy_spares`), with a real listening process standing
in for `criu lazy-pages` (same contract: it listens on `lazy-pages.socket` in its directory and
says so on a status pipe): a taken spare is reached through the restoring container's directory;
a re-dumped or deleted image's spare is ended, never served."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

from corral_runtime.lazy_spares import LazyPagesSpares
from corral_runtime.snapshots import LAZY_PAGES_LOG, LAZY_PAGES_SOCKET, Image

# Listens on the socket in its directory, writes its log, answers each connection with b"pages".
LISTENER = """
import os, socket, sys
os.chdir(sys.argv[1])
open("LOG", "w").write("listening\\n")
server = socket.socket(socket.AF_UNIX)
server.bind("SOCKET")
server.listen()
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    conn.sendall(b"pages")
    conn.close()
""".replace("LOG", LAZY_PAGES_LOG).replace("SOCKET", LAZY_PAGES_SOCKET)


async def start_listener(_image: Image, directory: Path) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", LISTENER, str(directory),
                                                   stdout=asyncio.subprocess.PIPE, start_new_session=True)
    assert process.stdout is not None
    assert (await process.stdout.readline()).strip() == b"ready"
    return process


def image_at(path: Path, created_at: float = 1.0) -> Image:
    path.mkdir(exist_ok=True)
    return Image(path, {"created_at": created_at})


async def refilled(spares: LazyPagesSpares, image: Image) -> None:
    tasks: list[asyncio.Future[None]] = []
    spares.refill(image, lambda coro: tasks.append(asyncio.ensure_future(coro)))
    await asyncio.gather(*tasks)


def test_a_taken_spare_listens_in_the_restoring_containers_directory(tmp_path: Path) -> None:
    async def scenario() -> None:
        spares = LazyPagesSpares(tmp_path / "spares", start_listener, start_delay_s=0)
        image = image_at(tmp_path / "image")
        workdir = tmp_path / "container"
        workdir.mkdir()
        assert spares.take(image, workdir) is None  # none started yet
        await refilled(spares, image)
        daemon = spares.take(image, workdir)
        assert daemon is not None and daemon.returncode is None
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(workdir / LAZY_PAGES_SOCKET))
            assert client.recv(16) == b"pages"
        assert (workdir / LAZY_PAGES_LOG).read_text() == "listening\n"
        assert spares.take(image, workdir) is None  # a spare serves one restore
        daemon.kill()
        await daemon.wait()

    asyncio.run(scenario())


def test_the_spare_of_a_redumped_or_deleted_image_is_ended(tmp_path: Path) -> None:
    async def scenario() -> None:
        spares = LazyPagesSpares(tmp_path / "spares", start_listener, start_delay_s=0)
        workdir = tmp_path / "container"
        workdir.mkdir()
        image = image_at(tmp_path / "image", created_at=1.0)
        await refilled(spares, image)
        [(_, old_daemon, _)] = spares.spares.values()
        redumped = image_at(tmp_path / "image", created_at=2.0)  # same key, new image
        assert spares.take(redumped, workdir) is None
        assert await asyncio.wait_for(old_daemon.wait(), timeout=10) != 0

        other = image_at(tmp_path / "other")
        await refilled(spares, other)
        [(_, daemon, _)] = spares.spares.values()
        (tmp_path / "other").rmdir()
        spares.end_deleted()
        assert await asyncio.wait_for(daemon.wait(), timeout=10) != 0
        assert not spares.spares

    asyncio.run(scenario())


def test_a_spare_whose_image_is_deleted_while_it_starts_is_ended(tmp_path: Path) -> None:
    """The race the app's stop runs into: the refill waits its delay, the image is deleted (and
    `end_deleted` finds no spare to end), then the daemon would start for an image that is gone."""
    started: list[asyncio.subprocess.Process] = []

    async def start_then_delete(image: Image, directory: Path) -> asyncio.subprocess.Process:
        process = await start_listener(image, directory)
        started.append(process)
        image.path.rmdir()  # deleted while the daemon was starting
        spares.end_deleted()
        return process

    async def scenario() -> None:
        await refilled(spares, image_at(tmp_path / "image"))
        assert not spares.spares
        [daemon] = started
        assert await asyncio.wait_for(daemon.wait(), timeout=10) != 0

        gone = image_at(tmp_path / "gone")
        gone.path.rmdir()  # deleted during the start delay: no daemon at all
        await refilled(spares, gone)
        assert len(started) == 1 and not spares.spares

    spares = LazyPagesSpares(tmp_path / "spares", start_then_delete, start_delay_s=0)
    asyncio.run(scenario())
