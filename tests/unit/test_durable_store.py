"""The store's two methods for durable calls, on real SQLite and real PostgreSQL: what is written is
read back after the store is reopened (a restart), an override with inline secret values is
sealed, and a batch that fails midway writes nothing of itself and loses nothing stored before."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from corral_protocol.v1 import common_pb2
from corral_scheduler import effects as fx
from corral_scheduler.model import StoredCall
from corral_scheduler.state_db import open_database
from corral_scheduler.state_url import StateLocation
from corral_scheduler.store import Store


def _call(call_id: str, override: common_pb2.ServiceOptions | None = None) -> StoredCall:
    return StoredCall(
        call_id=call_id, app_id="ap-1", class_name="Model",
        parameters=(common_pb2.NamedParameter(name="size", value=common_pb2.ParameterValue(int_value=3)),),
        override=override or common_pb2.ServiceOptions(), method="run", args=common_pb2.Payload(data=b"args"), created_at=1.0,
    )


def test_calls_written_are_read_back_after_a_restart(tmp_path: Path, state_location: StateLocation) -> None:
    store = Store(tmp_path / "state", location=state_location)
    done = common_pb2.Result(status=common_pb2.RESULT_STATUS_SUCCESS, value=common_pb2.Payload(data=b"42"))
    store.write_calls([fx.PersistInput(_call("fc-1")), fx.PersistAttempt("fc-1", 1), fx.PersistInput(_call("fc-2"))])
    store.write_calls([fx.PersistResult("fc-1", done, 5.0), fx.PersistInput(_call("fc-3")), fx.ForgetInput("fc-3")])
    store.close()

    reopened = Store(tmp_path / "state", location=state_location)
    calls = {c.call_id: c for c in reopened.stored_calls()}
    assert sorted(calls) == ["fc-1", "fc-2"]
    assert calls["fc-1"].attempts == 1 and calls["fc-1"].result == done and calls["fc-1"].finished_at == 5.0
    assert calls["fc-2"].result is None and calls["fc-2"].args.data == b"args"
    assert calls["fc-2"].parameters[0].value.int_value == 3 and calls["fc-2"].class_name == "Model"
    reopened.close()


def test_an_override_with_inline_secret_values_is_sealed(tmp_path: Path, state_location: StateLocation) -> None:
    override = common_pb2.ServiceOptions(secrets=[common_pb2.SecretRef(inline=common_pb2.InlineSecret(values={"KEY": "hunter2-value"}))])
    store = Store(tmp_path / "state", location=state_location)
    store.write_calls([fx.PersistInput(_call("fc-1", override))])
    (call,) = store.stored_calls()
    assert call.override.secrets[0].inline.values["KEY"] == "hunter2-value"
    store.close()
    raw_db = open_database(state_location, "state")
    raw = raw_db.execute("SELECT binding, sealed FROM calls").fetchone()
    raw_db.close()
    assert raw[1] == 1 and b"hunter2-value" not in bytes(raw[0])


def test_calls_are_read_back_in_the_order_they_were_spawned(tmp_path: Path, state_location: StateLocation) -> None:
    store = Store(tmp_path / "state", location=state_location)
    store.write_calls([fx.PersistInput(_call(call_id)) for call_id in ("fc-c", "fc-a", "fc-b")])  # one created_at
    assert [c.call_id for c in store.stored_calls()] == ["fc-c", "fc-a", "fc-b"]
    store.close()


def test_a_batch_that_fails_midway_writes_nothing_and_loses_nothing(tmp_path: Path, state_location: StateLocation) -> None:
    store = Store(tmp_path / "state", location=state_location)
    store.write_calls([fx.PersistInput(_call("fc-1"))])
    broken = replace(_call("fc-3"), method="run\x00")  # a NUL the database refuses, after fc-2 was written
    with pytest.raises(ValueError, match="NUL"):
        store.write_calls([fx.PersistAttempt("fc-1", 2), fx.PersistInput(_call("fc-2")), fx.PersistInput(broken)])
    (call,) = store.stored_calls()
    assert call.call_id == "fc-1" and call.attempts == 0
    store.close()
