"""``jetq.metrics_history`` (docs/PROTOCOL.md §15) against docs/conformance/metrics_history.json,
records written into a real server's bucket (range and queue filters), and a real Rust
``test_worker`` whose per-minute records add up to what it ran."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import time
from typing import Any, AsyncIterator, Dict, List, Optional

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import KeyValueConfig, StorageType

from jetq import AsyncProducer, MinuteRecord, metrics_history
from jetq.metrics_history import (
    RUN_MS_BOUNDS,
    bucket_index,
    metrics_bucket,
    minute_key,
    minute_of,
    parse_key,
    parse_record,
)
from jetq.protocol import Subjects, parse_timestamp
from jetq.testing import NatsServer, RunningBinary

from .rust import rust_binaries, worker_env
from .support import WAIT, config_for, within

VECTORS_PATH = os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "docs", "conformance", "metrics_history.json"
)

with open(VECTORS_PATH, encoding="utf-8") as handle:
    VECTORS: Dict[str, Any] = json.load(handle)


def test_bounds_buckets_and_keys() -> None:
    assert list(RUN_MS_BOUNDS) == VECTORS["run_ms_bounds"]
    for case in VECTORS["buckets"]:
        assert metrics_bucket(Subjects(case["prefix"])) == case["bucket"]
    for case in VECTORS["keys"]:
        at = parse_timestamp(case["at"])
        assert at is not None
        assert minute_of(at) == case["minute"]
        assert minute_key(case["queue"], case["minute"]) == case["key"]
        assert parse_key(case["key"]) == (case["queue"], case["minute"])
    for key in VECTORS["invalid_keys"]:
        assert parse_key(key) is None, key
    for case in VECTORS["run_buckets"]:
        assert bucket_index(case["ms"]) == case["index"]


def _trimmed(record: MinuteRecord) -> Dict[str, Any]:
    value = record.to_json()
    while value["run_ms_buckets"] and value["run_ms_buckets"][-1] == 0:
        value["run_ms_buckets"].pop()
    return value


@pytest.mark.parametrize("case", VECTORS["merges"], ids=lambda c: c["name"])
def test_the_merge_rule(case: Dict[str, Any]) -> None:
    expected = parse_record(json.dumps(case["merged"]).encode())
    assert expected is not None
    for order in (case["records"], list(reversed(case["records"]))):
        records = [parse_record(json.dumps(r).encode()) for r in order]
        merged = records[0]
        assert merged is not None
        for record in records[1:]:
            assert record is not None
            merged.merge(record)
        assert _trimmed(merged) == _trimmed(expected)
    for q, ms in (case.get("quantiles") or {}).items():
        assert expected.run_ms_quantile(float(q)) == ms
    assert parse_record(b"not json") is None


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[NatsClient]:
    nc = await within("connect", nats.connect(nats_server.url, allow_reconnect=False))
    try:
        yield nc
    finally:
        await nc.close()


async def test_reads_the_records_of_a_range_and_queue(client: NatsClient) -> None:
    assert await metrics_history(client) == [], "no bucket: no history"
    kv = await client.jetstream().create_key_value(
        KeyValueConfig(bucket="JETQ_METRICS", history=1, storage=StorageType.MEMORY)
    )
    now = int(time.time()) // 60
    for queue, minute, succeeded in [
        ("emails", now, 5),
        ("emails", now - 30, 3),
        ("emails", now - 300, 7),
        ("exports", now - 1, 2),
    ]:
        record = MinuteRecord(queue=queue, minute=minute, succeeded=succeeded, pending=1)
        await kv.put(record.key, json.dumps(record.to_json()).encode())
    await kv.put("emails.garbage", b"{}")
    await kv.put(f"emails.{now - 2}", b"not json")

    hour = await metrics_history(client, queue="emails")
    assert [(r.minute, r.succeeded) for r in hour] == [(now - 30, 3), (now, 5)]
    assert hour[0].pending == 1
    assert hour[0].start == datetime.datetime.fromtimestamp((now - 30) * 60, tz=datetime.timezone.utc)
    day = await metrics_history(client, since=datetime.timedelta(hours=24))
    assert [(r.queue, r.minute) for r in day] == [
        ("emails", now - 300),
        ("emails", now - 30),
        ("emails", now),
        ("exports", now - 1),
    ]


async def eventually(what: str, check: Any, limit: float = WAIT) -> Any:
    async def poll() -> Any:
        while True:
            value = await check()
            if value is not None:
                return value
            await asyncio.sleep(0.05)

    return await within(what, poll(), limit)


@pytest.mark.rust
async def test_the_history_a_rust_worker_writes(nats_server: NatsServer, client: NatsClient) -> None:
    binaries = rust_binaries()
    env = worker_env(nats_server.url, "py")
    env["JETQ_HISTORY_INTERVAL"] = "200ms"
    worker = RunningBinary(binaries["test_worker"], env)
    try:
        producer = await within("producer", AsyncProducer.connect(config_for(nats_server)))
        try:

            async def enqueue() -> Optional[bool]:
                try:
                    await producer.enqueue("work", "job", {"n": 0, "note": "sleep:20"})
                except Exception:
                    return None
                return True

            await eventually("enqueue once the worker provisioned", enqueue)
            for n, note in [(1, "sleep:20"), (2, "fatal"), (3, "fail-once")]:
                await producer.enqueue("work", "job", {"n": n, "note": note})
        finally:
            await producer.close()

        async def adds_up() -> Optional[List[MinuteRecord]]:
            records = await metrics_history(client, queue="work")
            total = MinuteRecord(queue="work", minute=0)
            for record in records:
                total.merge(record)
            counts = (total.succeeded, total.failed, total.retried, total.dead, total.runs)
            return records if counts == (3, 2, 1, 1, 5) else None

        records = await eventually("the history adds up to what ran", adds_up)
        assert all(r.queue == "work" for r in records)
        assert sum(sum(r.run_ms_buckets) for r in records) == 5
    finally:
        worker.stop()
