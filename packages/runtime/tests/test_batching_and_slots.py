"""The container's batcher and concurrency slots, on their own (no processes)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from corral import _serialization
from corral_protocol.v1 import common_pb2, worker_pb2
from corral_runtime.batching import Batcher
from corral_runtime.slots import SlotGate


def _input(*args: object) -> worker_pb2.Input:
    return worker_pb2.Input(input_id="i", method="f", args=_serialization.encode_args(args, {}))


@pytest.fixture
def loop():  # type: ignore[no-untyped-def]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


def test_a_full_batch_closes_at_once_and_each_input_gets_its_element(loop: asyncio.AbstractEventLoop) -> None:
    sizes: list[int] = []

    def double(xs: list[int]) -> list[int]:
        sizes.append(len(xs))
        return [x * 2 for x in xs]

    batcher = Batcher(double, max_batch_size=3, wait_ms=60_000, loop=loop)
    futures = [batcher.submit(_input(i)) for i in range(3)]
    assert [_serialization.unwrap(f.result(timeout=10)) for f in futures] == [0, 2, 4]
    assert sizes == [3]
    batcher.close()


def test_wait_ms_closes_a_partial_batch(loop: asyncio.AbstractEventLoop) -> None:
    batcher = Batcher(lambda xs: [x + 1 for x in xs], max_batch_size=100, wait_ms=20, loop=loop)
    assert _serialization.unwrap(batcher.submit(_input(1)).result(timeout=10)) == 2
    batcher.close()


def test_bad_arguments_fail_only_their_own_input(loop: asyncio.AbstractEventLoop) -> None:
    batcher = Batcher(lambda xs: xs, max_batch_size=2, wait_ms=20, loop=loop)
    bad = batcher.submit(_input(1, 2))
    good = batcher.submit(_input(7))
    assert bad.result(timeout=10).status == common_pb2.RESULT_STATUS_INVALID_ARGUMENT
    assert _serialization.unwrap(good.result(timeout=10)) == 7
    batcher.close()


def _json_input(body: str) -> worker_pb2.Input:
    return worker_pb2.Input(input_id="j", method="f", args=common_pb2.Payload(format=common_pb2.PAYLOAD_FORMAT_JSON, data=body.encode()))


def test_json_inputs_of_a_batch_are_converted_and_answered_in_json(loop: asyncio.AbstractEventLoop) -> None:
    def double(xs: list[int]) -> list[int]:
        return [x * 2 for x in xs]

    batcher = Batcher(double, max_batch_size=2, wait_ms=60_000, loop=loop)
    from_json, from_python = batcher.submit(_json_input('{"args": ["21"]}')), batcher.submit(_input(4))
    answer = from_json.result(timeout=10)
    assert answer.value.format == common_pb2.PAYLOAD_FORMAT_JSON and answer.value.data == b"42"
    assert _serialization.unwrap(from_python.result(timeout=10)) == 8
    refused = batcher.submit(_json_input('{"args": ["x"]}')).result(timeout=10)
    assert refused.status == common_pb2.RESULT_STATUS_INVALID_ARGUMENT and "'xs' must be an integer" in refused.message
    batcher.close()


def test_a_failed_batch_answers_each_caller_in_its_own_format(loop: asyncio.AbstractEventLoop) -> None:
    def broken(xs: list[int]) -> list[int]:
        raise ValueError("broken batch")

    batcher = Batcher(broken, max_batch_size=2, wait_ms=60_000, loop=loop)
    from_json, from_python = batcher.submit(_json_input('{"args": [1]}')), batcher.submit(_input(2))
    assert from_json.result(timeout=10).exception.format == common_pb2.PAYLOAD_FORMAT_JSON
    assert from_python.result(timeout=10).exception.format == common_pb2.PAYLOAD_FORMAT_PICKLE
    batcher.close()


def test_an_async_batched_method_runs_on_the_loop(loop: asyncio.AbstractEventLoop) -> None:
    async def triple(xs: list[int]) -> list[int]:
        await asyncio.sleep(0)
        return [x * 3 for x in xs]

    batcher = Batcher(triple, max_batch_size=2, wait_ms=10_000, loop=loop)
    futures = [batcher.submit(_input(i)) for i in (1, 2)]
    assert [_serialization.unwrap(f.result(timeout=10)) for f in futures] == [3, 6]
    batcher.close()


def test_slot_gate_hands_freed_slots_to_waiting_pushed_inputs_first(loop: asyncio.AbstractEventLoop) -> None:
    gate = SlotGate(1, loop)
    assert gate.try_acquire()
    waiter = asyncio.run_coroutine_threadsafe(gate.acquire(), loop)
    while not gate._waiters:  # the pushed input is queued behind the busy slot
        threading.Event().wait(0.001)
    assert not gate.try_acquire()  # a direct input may not jump the queue
    gate.release()
    waiter.result(timeout=10)
    assert gate.used == 1 and not gate.try_acquire()
    gate.release()
    assert gate.used == 0 and gate.try_acquire()
