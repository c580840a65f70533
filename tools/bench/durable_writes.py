#!/usr/bin/env python3
"""The store's cost of a durable call: the transactions `ControlPlane` makes for one spawned call.

    .venv/bin/python tools/bench/durable_writes.py [--calls 2000] [--state-url postgresql://USER@HOST:PORT/DB]

A spawn is one transaction (PersistInput, with PersistAttempt when a container takes it at once),
its result another (PersistResult), reading the result a third (ForgetInput, when the caller forgets
it or it expires). Measured on a temporary SQLite store (WAL, synchronous=NORMAL), or on the
database `--state-url` names (its tables are created if missing; the rows written are removed), next
to a bare `INSERT` + `DELETE` transaction pair on the same database as the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from corral_protocol.v1 import common_pb2
from corral_scheduler import effects as fx
from corral_scheduler.model import StoredCall
from corral_scheduler.state_url import parse_state_url
from corral_scheduler.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--state-url", default=None, help="default: SQLite in a temporary directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        location = parse_state_url(args.state_url, Path(tmp) / "state")
        store = Store(Path(tmp) / "state", location=location)
        args_payload = common_pb2.Payload(data=b"x" * 200)
        result = common_pb2.Result(status=common_pb2.RESULT_STATUS_SUCCESS, value=common_pb2.Payload(data=b"y" * 200))
        spawn_s, result_s, forget_s, baseline_s = [], [], [], []
        for i in range(args.calls):
            call = StoredCall(f"fc-{i}", "ap-1", "Echo", (), common_pb2.ServiceOptions(), "echo", args_payload, time.time())
            start = time.perf_counter()
            store.write_calls([fx.PersistInput(call), fx.PersistAttempt(call.call_id, 1)])
            spawn_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            store.write_calls([fx.PersistResult(call.call_id, result, time.time())])
            result_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            store.write_calls([fx.ForgetInput(call.call_id)])
            forget_s.append(time.perf_counter() - start)
            db = store._db  # the baseline: the same database, a bare row in and out
            start = time.perf_counter()
            with db.transaction():
                db.execute("INSERT INTO proxy_tokens VALUES (?, '', '', 0)", (f"t-{i}",))
            with db.transaction():
                db.execute("DELETE FROM proxy_tokens WHERE token_id = ?", (f"t-{i}",))
            baseline_s.append(time.perf_counter() - start)
        store.close()

    def us(samples: list[float]) -> str:
        samples = sorted(samples)
        return f"p50 {statistics.median(samples) * 1e6:6.0f} us   p99 {samples[int(len(samples) * 0.99)] * 1e6:6.0f} us"

    total = [a + b + c for a, b, c in zip(spawn_s, result_s, forget_s, strict=True)]
    print(f"{args.calls} durable calls on {location.describe()}")
    print(f"spawn (PersistInput + PersistAttempt)   {us(spawn_s)}")
    print(f"result (PersistResult)                  {us(result_s)}")
    print(f"forget (ForgetInput)                    {us(forget_s)}")
    print(f"all three, per call                     {us(total)}")
    print(f"baseline: bare insert + delete          {us(baseline_s)}")
    print(f"ratio, per call / baseline (p50)        {statistics.median(total) / statistics.median(baseline_s):.1f}x")


if __name__ == "__main__":
    main()
