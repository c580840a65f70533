"""The log store, on SQLite and PostgreSQL: lines by app, container and input, in order; bounded
retention; followers; hostile text."""

from __future__ import annotations

import asyncio

from corral_protocol.v1 import common_pb2, worker_pb2
from corral_scheduler.logs import LogStore
from corral_scheduler.state_url import StateLocation


def batch(*texts: str, input_id: str = "", at: float = 1000.0) -> worker_pb2.LogBatch:
    return worker_pb2.LogBatch(lines=[common_pb2.LogLine(timestamp=at, stream="stdout", input_id=input_id, text=t) for t in texts])


def test_lines_are_selected_by_app_container_and_input(state_location: StateLocation) -> None:
    store = LogStore(state_location)
    store.ingest("ap-1", "ct-1", batch("a", "b", input_id="fc-1"))
    store.ingest("ap-2", "ct-2", batch("x"))
    store.ingest("ap-1", "ct-3", batch("c"))
    assert [line.text for line in store.query(app_id="ap-1")] == ["a", "b", "c"]
    assert [line.text for line in store.query(container_id="ct-3")] == ["c"]
    assert [line.text for line in store.query(app_id="ap-1", input_id="fc-1")] == ["a", "b"]
    assert [line.text for line in store.query(app_id="ap-1", tail=1)] == ["c"]
    (line,) = store.query(container_id="ct-2")
    assert (line.app_id, line.container_id, line.stream, line.timestamp) == ("ap-2", "ct-2", "stdout", 1000.0)


def test_retention_keeps_the_newest_lines_per_app_and_drops_old_ones(state_location: StateLocation) -> None:
    store = LogStore(state_location, max_lines_per_app=3, max_age_s=100)
    store.ingest("ap-1", "ct-1", batch(*(str(i) for i in range(5)), at=1000.0))
    store.ingest("ap-2", "ct-2", batch("old", at=800.0))
    store.prune("ap-1", now=1000.0)
    assert [line.text for line in store.query(app_id="ap-1")] == ["2", "3", "4"]
    assert store.query(app_id="ap-2") == []  # older than max_age_s


def test_a_dropped_count_is_stored_as_a_line(state_location: StateLocation) -> None:
    store = LogStore(state_location)
    store.ingest("ap-1", "ct-1", worker_pb2.LogBatch(lines=batch("a").lines, dropped=7))
    assert [line.text for line in store.query(app_id="ap-1")] == ["a", "[corral: 7 lines dropped in the container]"]


def test_a_follower_gets_stored_lines_then_new_ones(state_location: StateLocation) -> None:
    store = LogStore(state_location)
    store.ingest("ap-1", "ct-1", batch("first"))

    async def follow() -> list[str]:
        seen: list[str] = []
        pages = store.follow(app_id="ap-1", follow=True)
        seen += [line.text for line in await anext(pages)]
        store.ingest("ap-1", "ct-1", batch("second"))
        seen += [line.text for line in await anext(pages)]
        await pages.aclose()
        return seen

    assert asyncio.run(follow()) == ["first", "second"]


def test_hostile_text_is_stored_as_it_came_nul_aside(state_location: StateLocation) -> None:
    store = LogStore(state_location)
    texts = ["'); DROP TABLE lines; --", "%s %(x)s ? $1", "😀 ünïcode", "x" * 1_000_000, "a\x00b"]
    store.ingest("ap-1", "ct-1", batch(*texts))
    stored = [line.text for line in store.query(app_id="ap-1")]
    assert stored == [*texts[:4], "a\ufffdb"]
    store.close()
