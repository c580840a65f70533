"""Building images on a node: the Debian base with mmdebstrap, the corral worker from wheels of the
node's own corral packages, then each step in a sandboxed runc container with network access,
writing its own overlayfs layer (`corral_runtime.image_store`).

Builds of one image are deduplicated (a second request waits for the first and reuses its result);
layers are built under a machine-wide lock. A failed step raises `BuildError` naming the step with
the tail of its log, and leaves nothing in the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import shlex
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from corral_protocol.v1 import common_pb2
from corral_runtime import image_store, oci
from corral_runtime.build_limits import DEFAULT_STEP_TIMEOUT_S, BuildLimits
from corral_runtime.image_store import LOCAL_PYTHON, VENV, ImageStore, Plan, Step
from corral_runtime.worker_wheels import TOOLS, worker_wheels

log = logging.getLogger("corral.runtime")

Progress = Callable[[common_pb2.ImageBuildProgress], None]
FetchBundle = Callable[[str], Awaitable[Path]]
LOG_TAIL_LINES = 30
# The node's way to package registries, passed to build steps: proxies and index URLs.
FORWARDED_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "UV_INDEX_URL",
                 "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
KEEPALIVE_S = 30.0  # well under the control plane's relay timeout (image_builds.BUILD_TIMEOUT_S)


class BuildError(Exception):
    """A build step failed; the message names the step and ends with its log's tail."""


class StepTimeout(Exception):
    """A build step ran past its time limit and was killed."""


class ImageBuilder:
    """Builds images for one node's runc runtime."""

    def __init__(self, store: ImageStore, runtime: object, limits: BuildLimits | None = None) -> None:
        from corral_runtime.runc import RuncRuntime  # a cycle otherwise: runc prepares image roots

        assert isinstance(runtime, RuncRuntime)
        self.store = store
        self.runtime = runtime
        self.limits = limits or BuildLimits()
        self.uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
        self.fingerprint, self.requirements = worker_wheels(store.root / "wheels")
        self._builds: dict[str, asyncio.Future[Plan]] = {}

    def plan(self, spec: common_pb2.ImageSpec) -> Plan:
        return image_store.plan(spec, _spec_hash(spec), self.fingerprint)

    def ready(self, spec: common_pb2.ImageSpec) -> Plan | None:
        """The image's plan when every layer is cached (a start then builds nothing), else None."""
        result = self.plan(spec)
        return None if self.store.missing(result) else result

    async def ensure(self, spec: common_pb2.ImageSpec, fetch: FetchBundle, progress: Progress | None = None) -> Plan:
        """Build what is missing of `spec` (once per image, however many ask) and return its plan."""
        result = self.plan(spec)
        report = progress or (lambda _p: None)
        if not self.store.missing(result):
            for index, step in enumerate(result.steps, 1):
                report(_progress(result, index, step.title, cached=True))
            report(_progress(result, len(result.steps), "", done=True))
            return result
        running = self._builds.get(result.image_hash)
        if running is not None:
            waiting = _progress(result, 0, "waiting for the same image's build already running")
            report(waiting)
            async with _keepalive(lambda: report(waiting)):
                await asyncio.shield(running)
            return await self.ensure(spec, fetch, progress)
        future: asyncio.Future[Plan] = asyncio.get_running_loop().create_future()
        self._builds[result.image_hash] = future
        try:
            await self._build(result, fetch, report)
            future.set_result(result)
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # retrieved: waiters see it through their own retry
            raise
        finally:
            self._builds.pop(result.image_hash, None)
        with contextlib.suppress(OSError):
            removed = await asyncio.to_thread(self.store.enforce_bound)
            if removed:
                log.info("image cache: removed %d least-recently-used layer(s) beyond the size bound", removed)
        return result

    async def _build(self, result: Plan, fetch: FetchBundle, report: Progress) -> None:
        began = time.monotonic()
        env: dict[str, str] = {}
        workdir = ""
        for index, step in enumerate(result.steps, 1):
            if step.step is not None and step.kind == "env":
                env.update(step.step.env)
            if step.step is not None and step.kind == "workdir":
                workdir = step.step.path
            if not step.has_layer or self.store.has(step.key):
                report(_progress(result, index, step.title, cached=True, began=began))
                continue

            def line(text: str, index: int = index, step: Step = step) -> None:
                report(_progress(result, index, step.title, log_line=text, began=began))

            def beat(index: int = index, step: Step = step) -> None:  # the same header: a silent step is alive
                report(_progress(result, index, step.title, began=began))

            lock = self.store.locked(step.key)  # another node of this machine may be building it
            async with _keepalive(beat):
                await asyncio.to_thread(lock.__enter__)
                try:
                    if self.store.has(step.key):
                        report(_progress(result, index, step.title, cached=True, began=began))
                        continue
                    beat()
                    if step.kind == "base":
                        await self._base(result.release, line)
                    else:
                        await self._layer(result, index, step, env, workdir, fetch, line)
                finally:
                    lock.__exit__(None, None, None)
        report(_progress(result, len(result.steps), "", done=True, began=began))

    async def _base(self, release: str, line: Callable[[str], None]) -> None:
        await _build_base(self.store, release, line, self.limits.step_timeout_s)

    def _script(self, step: Step, workdir: str) -> tuple[str, list[oci.Bind]]:
        """The shell script of one step and the extra binds it needs."""
        binds: list[oci.Bind] = []
        uv = f"{TOOLS}/uv pip install --compile-bytecode --python {VENV}/bin/python"  # .pyc in the layer: containers never compile
        if step.kind == "worker":
            wheels = self.store.root / "wheels" / self.fingerprint
            binds.append(oci.Bind(str(wheels), f"{TOOLS}/wheels"))
            pth = f"{VENV}/lib/python3*/site-packages"
            script = (f"python3 -m venv {VENV} && {uv} {' '.join(shlex.quote(r) for r in self.requirements)}"
                      f" && mkdir -p {oci.BUNDLE_MOUNT} {LOCAL_PYTHON} && echo {LOCAL_PYTHON} > $(echo {pth})/corral-local.pth")
            return script, binds
        assert step.step is not None
        args = list(step.step.args)
        if step.kind == "pip":
            script = f"{uv} {' '.join(shlex.quote(a) for a in args)}"
        elif step.kind == "apt":
            apt = "apt-get -o APT::Sandbox::User=root -o Dpkg::Use-Pty=0"
            script = (f"{apt} update -qq && {apt} install -y -qq --no-install-recommends {' '.join(shlex.quote(a) for a in args)}"
                      " && rm -rf /var/lib/apt/lists/*")
        elif step.kind == "run":
            script = " && ".join(f"( {a} )" for a in args)
        else:  # files
            script = f"mkdir -p {shlex.quote(step.step.path)} && cp -a {TOOLS}/files/. {shlex.quote(step.step.path)}/"
        if workdir and step.kind == "run":
            script = f"mkdir -p {shlex.quote(workdir)} && cd {shlex.quote(workdir)} && {script}"
        return script, binds

    async def _layer(self, result: Plan, index: int, step: Step, env: dict[str, str], workdir: str,
                     fetch: FetchBundle, line: Callable[[str], None]) -> None:
        staging = self.store.layer_dir(step.key).with_name(f"{step.key}.tmp-{os.getpid()}-{secrets.token_hex(3)}")
        rootfs = self.runtime.bundle_path(staging) / "rootfs"
        script, binds = self._script(step, workdir)
        if step.kind == "files" and step.step is not None:
            binds.append(oci.Bind(str(await fetch(step.step.bundle_hash)), f"{TOOLS}/files"))
        binds += [oci.Bind(self.uv, f"{TOOLS}/uv"), oci.Bind(str(self.store.root / "uv-cache"), f"{TOOLS}/uv-cache", read_only=False)]
        binds += [oci.Bind(path, path) for path in ("/etc/resolv.conf", "/etc/hosts") if os.path.exists(path)]
        build_env = {"PATH": f"{VENV}/bin:{image_store.BASE_PATH}", "HOME": "/root", "LANG": "C.UTF-8",
                     "DEBIAN_FRONTEND": "noninteractive", "UV_CACHE_DIR": f"{TOOLS}/uv-cache", "UV_LINK_MODE": "copy",
                     "UV_NO_PROGRESS": "1", "PIP_NO_INPUT": "1"}
        build_env.update({k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k) and "file://" not in os.environ[k]})
        ca_bundle = os.environ.get("SSL_CERT_FILE") or HOST_CA_BUNDLE
        if os.path.isfile(ca_bundle):  # the node's trusted roots (a TLS-inspecting proxy's CA included)
            binds.append(oci.Bind(ca_bundle, f"{TOOLS}/ca-certificates.crt"))
            build_env.update(SSL_CERT_FILE=f"{TOOLS}/ca-certificates.crt", UV_SYSTEM_CERTS="1", PIP_CERT=f"{TOOLS}/ca-certificates.crt")
        build_env.update(env)
        container_id = f"build-{step.key[:12]}-{secrets.token_hex(3)}"
        ok, code, why = False, -1, ""
        tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        try:
            image_store.mount_overlay(rootfs, self.store.lower_dirs(result, index - 1), staging / "fs", staging / "work")
            self.runtime.prepare_build(container_id, staging, args=["/bin/sh", "-c", script], env=build_env, binds=binds,
                                       limits=self.limits)
            try:
                code = await _stream(self.runtime.run_argv(container_id, staging), line, tail, self.limits.step_timeout_s)
            except StepTimeout:
                why = f"failed: it ran past the build step time limit ({self.limits.step_timeout_s:g} s) and was stopped"
            ok = code == 0 and not why
        finally:
            usage = await self.runtime.remove(container_id, staging)  # the container first: nothing writes the layer after
            image_store.unmount(rootfs)
            if ok:
                self.store.commit(step.key, staging, step.title)
            else:
                shutil.rmtree(staging, ignore_errors=True)
        if not ok:
            out_of_memory = usage.out_of_memory(code)
            why = why or (f"failed: {out_of_memory}" if out_of_memory else f"failed with exit status {code}")
            raise BuildError(f"step {index}/{len(result.steps)} '{step.title}' {why}; the last lines of its log:\n" + "".join(tail))


async def _build_base(store: ImageStore, release: str, line: Callable[[str], None],
                      timeout_s: float = DEFAULT_STEP_TIMEOUT_S) -> None:
    """mmdebstrap's minbase of `release` with its python3 and venv, into the store (atomically)."""
    if shutil.which("mmdebstrap") is None:
        raise BuildError("step 'debian_slim' failed: mmdebstrap is not installed on the node (apt-get install mmdebstrap)")
    target = store.base_dir(release)
    staging = target.with_name(f"{release}.tmp-{os.getpid()}")
    image_store.discard(staging)
    argv = ["mmdebstrap", "--variant=minbase", "--include=python3,python3-venv", release, str(staging)]
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    try:
        code = await _stream(argv, line, tail, timeout_s)
    except StepTimeout:
        image_store.discard(staging)
        raise BuildError(f"step 'debian_slim ({release})' failed: mmdebstrap ran past the build step time limit ({timeout_s:g} s)\n"
                         + "".join(tail)) from None
    except BaseException:
        image_store.discard(staging)
        raise
    if code != 0:
        image_store.discard(staging)
        raise BuildError(f"step 'debian_slim ({release})' failed: mmdebstrap exited with {code}\n" + "".join(tail))
    os.replace(staging, target)


def _spec_hash(spec: common_pb2.ImageSpec) -> str:
    return hashlib.sha256(spec.SerializeToString(deterministic=True)).hexdigest()


def _progress(result: Plan, step: int, title: str, *, cached: bool = False, log_line: str = "", done: bool = False,
              began: float | None = None) -> common_pb2.ImageBuildProgress:
    return common_pb2.ImageBuildProgress(
        image_hash=result.image_hash, step=step, total=len(result.steps), title=title, cached=cached, log_line=log_line,
        done=done, elapsed_s=time.monotonic() - began if began is not None else 0.0,
    )


async def _stream(argv: list[str], line: Callable[[str], None], tail: deque[str], timeout_s: float) -> int:
    """Run `argv` with stdout and stderr merged, each line to `line` and to `tail`; its exit status.
    Past `timeout_s` it is killed and `StepTimeout` raised."""
    process = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    assert process.stdout is not None
    stdout = process.stdout

    async def pump() -> int:
        while raw := await stdout.readline():
            text = raw.decode(errors="replace")
            tail.append(text)
            line(text.rstrip("\n"))
        return await process.wait()

    try:
        return await asyncio.wait_for(pump(), timeout=timeout_s)
    except asyncio.TimeoutError:
        await _kill(process)
        raise StepTimeout from None
    except BaseException:
        await _kill(process)
        raise


@contextlib.asynccontextmanager
async def _keepalive(beat: Callable[[], None]) -> AsyncIterator[None]:
    """`beat()` every KEEPALIVE_S while the block runs: a step that prints nothing for long (or a
    wait on another build) still reports, so the control plane's relay never takes the node for
    gone, and a terminal's display keeps its elapsed time moving."""

    async def tick() -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            beat()

    ticker = asyncio.create_task(tick())
    try:
        yield
    finally:
        ticker.cancel()


async def _kill(process: asyncio.subprocess.Process) -> None:
    """Kill the process and what it started in its session (mmdebstrap's apt and dpkg; runc's
    container is then removed by `runc delete --force`)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()


def main() -> None:
    """`python -m corral_runtime.image_build --base 3.11`: build (or keep) the cached Debian base of
    a Python version, as `.ci/run` does once per machine so that tests never wait for mmdebstrap."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m corral_runtime.image_build")
    parser.add_argument("--base", action="append", default=[], metavar="PYTHON_VERSION", help="e.g. 3.11 (repeatable)")
    args = parser.parse_args()
    store = ImageStore(image_store.default_root(Path("/var/lib/corral")))
    for version in args.base or ["3.11"]:
        release = image_store.RELEASES[version]
        if store.has(f"base-{release}"):
            print(f"base for Python {version} (Debian {release}) already in {store.base_dir(release)}")
            continue
        with store.locked(f"base-{release}"):
            if not store.has(f"base-{release}"):
                asyncio.run(_build_base(store, release, lambda text: print(text, flush=True)))
        print(f"built the base for Python {version} (Debian {release}) in {store.base_dir(release)}")


if __name__ == "__main__":
    main()
