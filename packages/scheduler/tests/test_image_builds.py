"""The control plane's image build relay: every connected node is asked, each node's reports reach
the asking client's stream, the stream ends when every node is done, a failure ends it early, and
no connected node is a notice, not a failure."""

from __future__ import annotations

import asyncio

from corral_protocol.v1 import common_pb2, control_pb2, node_pb2
from corral_scheduler.image_builds import ImageBuilds

IMAGE = common_pb2.ImageSpec(base="debian_slim", python_version="3.11")


def _run(nodes: list[str], answer) -> list[common_pb2.ImageBuildProgress]:  # type: ignore[no-untyped-def]
    async def main() -> list[common_pb2.ImageBuildProgress]:
        builds: ImageBuilds

        def send(node_id: str, message: node_pb2.NodeSessionResponse) -> None:
            for report in answer(node_id, message):
                asyncio.get_running_loop().call_soon(builds.progress, report)

        builds = ImageBuilds(lambda: nodes, send)
        return [report async for report in builds.build([IMAGE, IMAGE])]

    return asyncio.run(main())


def test_every_node_builds_and_reports() -> None:
    def answer(node_id: str, message: node_pb2.NodeSessionResponse) -> list[common_pb2.ImageBuildProgress]:
        build_id = message.build_image.build_id
        return [common_pb2.ImageBuildProgress(build_id=build_id, node_name=node_id, step=1, total=2, title="base"),
                common_pb2.ImageBuildProgress(build_id=build_id, node_name=node_id, done=True)]

    reports = _run(["n1", "n2"], answer)
    assert len(reports) == 8  # two images, two nodes, two reports each
    assert sum(r.done for r in reports) == 4


def test_a_failed_build_ends_the_stream() -> None:
    def answer(node_id: str, message: node_pb2.NodeSessionResponse) -> list[common_pb2.ImageBuildProgress]:
        return [common_pb2.ImageBuildProgress(build_id=message.build_image.build_id, node_name=node_id, done=True,
                                              error="step 3/3 'run false' failed")]

    reports = _run(["n1"], answer)
    assert [r.error for r in reports] == ["step 3/3 'run false' failed"]  # the second image is not asked for


def test_no_node_is_a_notice() -> None:
    reports = _run([], lambda *_: [])
    assert reports[-1].done and not reports[-1].error and "no node is connected" in reports[0].title


def test_cache_reports_are_gathered_from_every_node() -> None:
    async def main() -> control_pb2.ManageImagesResponse:
        builds: ImageBuilds

        def send(node_id: str, message: node_pb2.NodeSessionResponse) -> None:
            report = node_pb2.ImageCacheReport(request_id=message.manage_image_cache.request_id, node_name=node_id, removed=1,
                                               layers=[common_pb2.ImageLayer(key="k", node_name=node_id)])
            asyncio.get_running_loop().call_soon(builds.cache_report, report)

        builds = ImageBuilds(lambda: ["n1", "n2"], send)
        return await builds.manage(control_pb2.ManageImagesRequest(remove_all=True))

    response = asyncio.run(main())
    assert response.removed == 2 and sorted(layer.node_name for layer in response.layers) == ["n1", "n2"]
