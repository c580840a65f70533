"""Image builds at deploy time: the control plane asks every connected node to build the images a
client needs, and relays each node's progress (`ImageBuildProgress`) back to that client's stream.

This lives beside the core, not in it: a build changes no scheduling state; containers started
later find the layers cached on their node (a node that missed the build builds at start).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable

from corral_protocol.v1 import common_pb2, control_pb2, node_pb2

BUILD_TIMEOUT_S = 1800.0  # a node silent this long (gone mid-build) ends the client's wait


class ImageBuilds:
    """Relays of the builds in flight, by build id."""

    def __init__(self, node_ids: Callable[[], list[str]], send: Callable[[str, node_pb2.NodeSessionResponse], None]) -> None:
        self._node_ids = node_ids
        self._send = send
        self._relays: dict[str, asyncio.Queue[common_pb2.ImageBuildProgress]] = {}
        self._caches: dict[str, asyncio.Queue[node_pb2.ImageCacheReport]] = {}

    def progress(self, report: common_pb2.ImageBuildProgress) -> None:
        """A node's report: to the stream of the request that asked (gone: dropped)."""
        relay = self._relays.get(report.build_id)
        if relay is not None:
            relay.put_nowait(report)

    def cache_report(self, report: node_pb2.ImageCacheReport) -> None:
        relay = self._caches.get(report.request_id)
        if relay is not None:
            relay.put_nowait(report)

    async def manage(self, request: control_pb2.ManageImagesRequest, timeout_s: float = 30.0) -> control_pb2.ManageImagesResponse:
        """Every connected node's cached layers, after removing those asked for (`corral image rm`);
        a node that does not answer within `timeout_s` is left out."""
        request_id = secrets.token_hex(8)
        relay: asyncio.Queue[node_pb2.ImageCacheReport] = asyncio.Queue()
        self._caches[request_id] = relay
        response = control_pb2.ManageImagesResponse()
        try:
            nodes = self._node_ids()
            command = node_pb2.ManageImageCache(request_id=request_id, remove_keys=list(request.remove_keys), remove_all=request.remove_all)
            for node_id in nodes:
                self._send(node_id, node_pb2.NodeSessionResponse(manage_image_cache=command))
            for _ in nodes:
                try:
                    report = await asyncio.wait_for(relay.get(), timeout=timeout_s)
                except asyncio.TimeoutError:
                    break
                response.layers.extend(report.layers)
                response.removed += report.removed
        finally:
            self._caches.pop(request_id, None)
        return response

    async def build(self, images: list[common_pb2.ImageSpec]) -> AsyncIterator[common_pb2.ImageBuildProgress]:
        """Build `images` on every connected node, one image after another; yields every report and
        stops after the first failed build (its report carries the error)."""
        nodes = self._node_ids()
        if not nodes:  # not a failure: a node builds what it lacks at its first container start
            yield common_pb2.ImageBuildProgress(title="no node is connected yet: images are built on each node at its first "
                                                      "container start instead")
            yield common_pb2.ImageBuildProgress(done=True)
            return
        for image in images:
            build_id = secrets.token_hex(8)
            relay: asyncio.Queue[common_pb2.ImageBuildProgress] = asyncio.Queue()
            self._relays[build_id] = relay
            try:
                for node_id in nodes:
                    self._send(node_id, node_pb2.NodeSessionResponse(build_image=node_pb2.BuildImage(build_id=build_id, image=image)))
                remaining, failed = len(nodes), False
                while remaining:
                    try:
                        report = await asyncio.wait_for(relay.get(), timeout=BUILD_TIMEOUT_S)
                    except asyncio.TimeoutError:
                        yield common_pb2.ImageBuildProgress(done=True, error=f"no node reported on the build for {BUILD_TIMEOUT_S:g} s")
                        return
                    yield report
                    if report.done:
                        remaining -= 1
                        failed = failed or bool(report.error)
                if failed:
                    return
            finally:
                self._relays.pop(build_id, None)
