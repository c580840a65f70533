"""A node's images: building them on command (progress back to the control plane), and what a
container with `image=` runs: the image's layers as its root, its virtualenv's Python, its env.

A container with no image keeps the node's own Python environment (`corral_runtime.runc`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from corral_protocol import env as corral_env
from corral_protocol.v1 import common_pb2, node_pb2
from corral_runtime import image_store
from corral_runtime.build_limits import BuildLimits
from corral_runtime.image_build import BuildError, FetchBundle, ImageBuilder
from corral_runtime.image_store import VENV, ImageStore, Plan
from corral_runtime.runc import ImageRoot, RuncRuntime

log = logging.getLogger("corral.runtime")

WORKER_ARGS = [f"{VENV}/bin/python", "-m", "corral_runtime.worker"]


def uses_image(start: node_pb2.StartContainer) -> bool:
    return start.HasField("image")


class NodeImages:
    """The image store and builder of a node with runc (None of either without it)."""

    def __init__(self, runtime: RuncRuntime, work_dir: Path, fetch: FetchBundle, log_stream: TextIO,
                 limits: BuildLimits | None = None) -> None:
        self.limits = limits if limits is not None else BuildLimits.from_env()
        self.store = ImageStore(image_store.default_root(work_dir))
        self.store.collect_staging()
        self.runtime = runtime
        self.fetch = fetch
        self._builder: ImageBuilder | None = None
        self._builder_lock = threading.Lock()
        self._log_stream = log_stream
        self._plans: dict[str, Plan] = {}  # container id -> its image's plan (layers in use)

    @property
    def builder(self) -> ImageBuilder:
        with self._builder_lock:  # made in a worker thread; two first builds must share one builder
            if self._builder is None:  # wheels of the corral packages are made on first use
                self._builder = ImageBuilder(self.store, self.runtime, self.limits)
                log.info("image builds: each step limited to %s", self.limits.describe())
            return self._builder

    async def build(self, command: node_pb2.BuildImage, emit: Callable[[common_pb2.ImageBuildProgress], None], node_name: str) -> None:
        """A `BuildImage` command: build, reporting every step and log line with the command's id."""

        image_hash = hashlib.sha256(command.image.SerializeToString(deterministic=True)).hexdigest()

        def report(progress: common_pb2.ImageBuildProgress) -> None:
            progress.build_id, progress.node_name = command.build_id, node_name
            progress.image_hash = progress.image_hash or image_hash
            emit(progress)

        try:
            builder = await asyncio.to_thread(lambda: self.builder)
            await builder.ensure(command.image, self.fetch, report)
        except (BuildError, OSError, ValueError) as err:
            log.warning("image build failed: %s", err)
            report(common_pb2.ImageBuildProgress(done=True, error=str(err)))
        except Exception as err:
            log.exception("image build failed")
            report(common_pb2.ImageBuildProgress(done=True, error=f"the node could not build the image: {err}"))

    def manage(self, command: node_pb2.ManageImageCache, node_name: str) -> node_pb2.ImageCacheReport:
        """`corral image list` / `rm`: remove what is asked (never a layer in use), list the rest."""
        removed = 0
        if command.remove_all or command.remove_keys:
            removed = self.store.remove(None if command.remove_all else list(command.remove_keys))
        layers = [common_pb2.ImageLayer(key=str(m["key"]), title=str(m["title"]), size_bytes=int(m["size"]),  # type: ignore[call-overload]
                                        last_used=float(m["last_used"]), node_name=node_name,  # type: ignore[arg-type]
                                        in_use=self.store.in_use.get(str(m["key"]), 0)) for m in self.store.layers()]
        return node_pb2.ImageCacheReport(request_id=command.request_id, node_name=node_name, layers=layers, removed=removed)

    async def prepare(self, start: node_pb2.StartContainer) -> tuple[list[str], ImageRoot, dict[str, str]]:
        """The worker's argv, the root and the base environment of a container with an image; built
        first only if some layer is missing (a node that joined after the deploy)."""
        builder = await asyncio.to_thread(lambda: self.builder)
        plan = builder.ready(start.image)
        if plan is None:
            log.info("container %s: building its image first", start.container_id)

            def line(progress: common_pb2.ImageBuildProgress) -> None:
                if progress.log_line or (progress.title and not progress.cached):
                    self._log_stream.write(f"[image {progress.image_hash[:12]}] {progress.log_line or progress.title}\n")

            plan = await builder.ensure(start.image, self.fetch, line)
        self.store.touch(plan)
        for key in plan.layer_keys:
            self.store.in_use[key] = self.store.in_use.get(key, 0) + 1
        self._plans[start.container_id] = plan
        env = {"PATH": f"{VENV}/bin:{image_store.BASE_PATH}", "LANG": "C.UTF-8", "VIRTUAL_ENV": VENV, **plan.env,
               corral_env.CORRAL_IMAGE_HASH: plan.image_hash}
        return list(WORKER_ARGS), ImageRoot(self.store.lower_dirs(plan), plan.workdir), env

    def release(self, container_id: str) -> None:
        """The container is gone: its layers are no longer in use by it."""
        self.runtime.image_runs.pop(container_id, None)
        plan = self._plans.pop(container_id, None)
        for key in plan.layer_keys if plan is not None else []:
            self.store.in_use[key] = max(0, self.store.in_use.get(key, 0) - 1)


async def image_command(images: NodeImages | None, command: node_pb2.NodeSessionResponse, emit: Callable[..., None],
                        node_name: str, no_runc_reason: str) -> None:
    """A node's `build_image` or `manage_image_cache` command; `emit(**event)` sends its reports.
    A node without runc builds nothing and holds no layer, and says why."""
    if command.HasField("build_image"):
        build = command.build_image
        if images is None:  # as its containers: the node's own environment, loudly
            warning = (f"warning: node {node_name} cannot build images without runc ({no_runc_reason}); its containers run "
                       "on the node's own Python environment and fail to start if it lacks the image's pip packages")
            emit(build_progress=common_pb2.ImageBuildProgress(build_id=build.build_id, node_name=node_name, title=warning))
            emit(build_progress=common_pb2.ImageBuildProgress(build_id=build.build_id, node_name=node_name, done=True))
            return
        await images.build(build, lambda progress: emit(build_progress=progress), node_name)
    elif command.HasField("manage_image_cache"):
        manage = command.manage_image_cache
        emit(image_cache=images.manage(manage, node_name) if images is not None else
             node_pb2.ImageCacheReport(request_id=manage.request_id, node_name=node_name))
