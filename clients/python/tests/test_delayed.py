"""Delayed enqueue (docs/PROTOCOL.md §7) against a real nats-server: where the task waits, with
which headers, the delayed-task stream the producer creates, and the due times that are not
delays at all. (That the Rust scheduler releases such a task and a Rust worker runs it no earlier
than its due time is tests/test_rust_interop.py.)"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType

import jetq
from jetq import AsyncProducer, TaskRequest
from jetq.protocol import parse_timestamp
from jetq.testing import NatsServer, create_task_stream, stored_tasks

from .support import config_for, within


async def test_a_delayed_task_waits_in_the_delayed_stream_it_creates(
    nats_server: NatsServer, raw_client: NatsClient
) -> None:
    await within("task stream", create_task_stream(nats_server.url, duplicate_window=90.0))
    producer = await within("connect", AsyncProducer.connect(config_for(nats_server)))
    try:
        before = dt.datetime.now(dt.timezone.utc)
        result = await within(
            "delayed enqueue",
            producer.enqueue_detailed("emails", "send_email", {"to": "ada@example.com"}, delay=dt.timedelta(hours=1), max_attempts=2),
        )
        after = dt.datetime.now(dt.timezone.utc)
    finally:
        await producer.close()
    assert result.stream == "JETQ_DELAYED" and not result.duplicate
    assert await stored_tasks(nats_server.url) == [], "nothing is runnable yet"

    js = raw_client.jetstream()
    info = await js.stream_info("JETQ_DELAYED")
    config = info.config
    assert config.subjects == ["jetq.delayed.*.*.*"]
    assert config.retention == RetentionPolicy.LIMITS
    assert config.storage == StorageType.FILE
    assert config.discard == DiscardPolicy.NEW
    assert not config.max_age, "a waiting task never expires"
    assert config.allow_direct
    assert config.duplicate_window == 90.0, "the task stream's duplicate window"

    [stored] = await stored_tasks(nats_server.url, "JETQ_DELAYED")
    assert stored.sequence == result.sequence
    not_before = parse_timestamp(stored.headers["Jetq-Not-Before"])
    assert not_before is not None
    assert before + dt.timedelta(hours=1) <= not_before <= after + dt.timedelta(hours=1)
    assert stored.subject == f"jetq.delayed.{int(not_before.timestamp())}.emails.send_email"
    assert stored.headers["Nats-Msg-Id"] == result.id
    assert stored.headers["Jetq-Max-Attempts"] == "2"
    assert set(stored.headers) == {"Nats-Msg-Id", "Jetq-Enqueued-At", "Jetq-Max-Attempts", "Jetq-Not-Before"}
    assert json.loads(stored.payload) == {"to": "ada@example.com"}


async def test_at_and_idempotency_keys_work_for_delayed_tasks(producer: AsyncProducer, nats_server: NatsServer) -> None:
    due = dt.datetime.now(dt.timezone.utc).replace(microsecond=123456) + dt.timedelta(days=2)
    first = await within("first", producer.enqueue_detailed("work", "job", {"n": 1}, at=due, key="remind-42"))
    second = await within("second", producer.enqueue_detailed("work", "job", {"n": 2}, at=due, key="remind-42"))
    assert first.id == second.id == "remind-42"
    assert not first.duplicate and second.duplicate, "the delayed stream deduplicates by key too"
    [stored] = await stored_tasks(nats_server.url, "JETQ_DELAYED")
    assert stored.headers["Jetq-Not-Before"] == due.strftime("%Y-%m-%dT%H:%M:%S.123456Z")
    assert stored.subject == f"jetq.delayed.{int(due.timestamp())}.work.job"
    assert json.loads(stored.payload) == {"n": 1}


async def test_a_due_time_already_past_is_enqueued_at_once(producer: AsyncProducer, nats_server: NatsServer, raw_client: NatsClient) -> None:
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    result = await within("enqueue", producer.enqueue_detailed("work", "job", {"n": 1}, at=past))
    zero = await within("enqueue", producer.enqueue_detailed("work", "job", {"n": 2}, delay=0))
    assert result.stream == zero.stream == "JETQ_TASKS"
    stored = await stored_tasks(nats_server.url)
    assert [t.subject for t in stored] == ["jetq.task.work.job"] * 2
    assert all("Jetq-Not-Before" not in t.headers for t in stored)
    names = [name async for name in _stream_names(raw_client)]
    assert "JETQ_DELAYED" not in names, "no delayed stream for tasks that are not delayed"


async def test_enqueue_many_mixes_immediate_and_delayed_tasks(producer: AsyncProducer, nats_server: NatsServer) -> None:
    tasks = [
        TaskRequest("work", "job", {"n": n}, delay=(60 * n if n % 2 else None)) for n in range(6)
    ] + [TaskRequest("work", "job", {"n": 99}, delay=dt.timedelta(days=40))]
    results = await within("batch", producer.enqueue_many(tasks, window=3))
    assert isinstance(results[-1], jetq.DelayTooLong)
    acked = [r for r in results[:-1] if isinstance(r, jetq.Enqueued)]
    assert [r.stream for r in acked] == ["JETQ_TASKS", "JETQ_DELAYED"] * 3
    assert [json.loads(t.payload)["n"] for t in await stored_tasks(nats_server.url)] == [0, 2, 4]
    delayed = await stored_tasks(nats_server.url, "JETQ_DELAYED")
    # The first delayed publishes found no stream and were resent once it existed, in any order.
    assert sorted(json.loads(t.payload)["n"] for t in delayed) == [1, 3, 5]


def test_the_blocking_producer_enqueues_delayed_tasks(nats_server: NatsServer) -> None:
    from jetq.testing import create_task_stream_sync, stored_tasks_sync

    create_task_stream_sync(nats_server.url)
    with jetq.Producer(config_for(nats_server)) as producer:
        task_id = producer.enqueue("emails", "send_email", {"to": "x@example.com"}, delay=90)
        try:
            producer.enqueue("emails", "send_email", {}, delay=dt.timedelta(days=31))
        except jetq.DelayTooLong as err:
            assert err.delay > err.max_delay
        else:  # pragma: no cover
            raise AssertionError("a 31-day delay was accepted")
    [stored] = stored_tasks_sync(nats_server.url, "JETQ_DELAYED")
    assert stored.headers["Nats-Msg-Id"] == task_id


async def _stream_names(nc: NatsClient):  # type: ignore[no-untyped-def]
    for info in await nc.jetstream().streams_info():
        yield info.config.name


async def test_the_producers_own_maximum_delay_applies(nats_server: NatsServer, task_stream: str) -> None:
    producer = await within("connect", AsyncProducer.from_env({"JETQ_NATS_URL": nats_server.url, "JETQ_MAX_DELAY": "1m"}))
    try:
        with pytest.raises(jetq.DelayTooLong) as caught:
            await producer.enqueue("work", "job", {}, delay=61)
        assert caught.value.max_delay == dt.timedelta(minutes=1)
        assert (await within("enqueue", producer.enqueue_detailed("work", "job", {}, delay=60))).stream == "JETQ_DELAYED"
    finally:
        await producer.close()
    assert await stored_tasks(nats_server.url) == []
