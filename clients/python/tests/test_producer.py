"""AsyncProducer against a real nats-server: acked enqueue, idempotency, pipelining, retries
with the same Nats-Msg-Id, and every typed error."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time

import pytest
from nats.aio.client import Client as NatsClient

import jetq
from jetq import (
    AsyncProducer,
    ConnectError,
    InvalidKey,
    InvalidName,
    InvalidOption,
    NoStream,
    NotConnected,
    DelayTooLong,
    ProducerClosed,
    SerializeError,
    ServerTooOld,
    StreamFull,
    TaskRequest,
    Timeout,
    TooLarge,
)
from jetq.producer import check_server_version, parse_version
from jetq.testing import NatsServer, create_task_stream, free_port, stored_tasks

from .support import FakeJetStream, ack, config_for, within


async def test_enqueue_returns_the_id_once_the_task_is_stored(producer: AsyncProducer, nats_server: NatsServer) -> None:
    task_id = await within(
        "enqueue",
        producer.enqueue("emails", "send_email", {"to": "ada@example.com"}, max_attempts=2, timeout=1.5),
    )
    assert len(task_id) == 26, task_id
    [stored] = await stored_tasks(nats_server.url)
    assert stored.subject == "jetq.task.emails.send_email"
    assert json.loads(stored.payload) == {"to": "ada@example.com"}
    assert stored.headers["Nats-Msg-Id"] == task_id
    assert stored.headers["Jetq-Max-Attempts"] == "2"
    assert stored.headers["Jetq-Timeout-Ms"] == "1500"
    assert "traceparent" not in stored.headers, "no span is active, so no trace context"


async def test_duplicate_key_is_reported_and_stored_once(producer: AsyncProducer, nats_server: NatsServer) -> None:
    first = await within("first", producer.enqueue_detailed("work", "job", {"n": 1}, key="signup:user-42"))
    second = await within("second", producer.enqueue_detailed("work", "job", {"n": 2}, key="signup:user-42"))
    assert first.id == second.id == "signup:user-42"
    assert not first.duplicate
    assert second.duplicate, "the second enqueue with the same key is a duplicate"
    assert second.sequence == first.sequence
    stored = await stored_tasks(nats_server.url)
    assert [json.loads(t.payload)["n"] for t in stored] == [1], "the first task is kept"


async def test_enqueue_many_keeps_order_and_reports_each_task(nats_server: NatsServer, task_stream: str) -> None:
    producer = await AsyncProducer.connect(config_for(nats_server, enqueue_window=8))
    try:
        tasks = [TaskRequest("work", "job", {"n": n}) for n in range(100)]
        tasks[50] = TaskRequest("work", "bad.name", {"n": 50})
        tasks[60] = TaskRequest("work", "job", {"n": 60}, key="has space")
        results = await within("batch", producer.enqueue_many(tasks))
    finally:
        await producer.close()
    assert len(results) == 100
    assert isinstance(results[50], InvalidName)
    assert isinstance(results[60], InvalidKey)
    acked = [r for r in results if isinstance(r, jetq.Enqueued)]
    assert len(acked) == 98
    sequences = [r.sequence for r in acked]
    assert sequences == sorted(sequences), "published in input order"
    stored = await stored_tasks(nats_server.url)
    assert [json.loads(t.payload)["n"] for t in stored] == [n for n in range(100) if n not in (50, 60)]
    assert [t.headers["Nats-Msg-Id"] for t in stored] == [r.id for r in acked]
    with pytest.raises(InvalidName):
        jetq.results_or_raise(results)


async def test_enqueue_many_accepts_tuples_and_is_pipelined_within_its_window(
    nats_server: NatsServer, raw_client: NatsClient
) -> None:
    fake = FakeJetStream(lambda i, msg: ack(i + 1), delay=0.05)
    await raw_client.subscribe("jetq.task.work.job", cb=fake.handle)
    await raw_client.flush()
    producer = await AsyncProducer.connect(config_for(nats_server))
    try:
        results = await within("batch", producer.enqueue_many([("work", "job", {"n": n}) for n in range(40)], window=4))
    finally:
        await producer.close()
    assert all(isinstance(r, jetq.Enqueued) for r in results), results
    assert len(fake.requests) == 40
    assert fake.max_pending <= 4, f"at most 4 acks outstanding, saw {fake.max_pending}"
    assert fake.max_pending >= 2, "publishes are pipelined, not one by one"
    assert [json.loads(m.data)["n"] for m in fake.requests] == list(range(40)), "sent in input order"


async def test_an_ack_timeout_is_retried_with_the_same_msg_id(nats_server: NatsServer, raw_client: NatsClient) -> None:
    # The first attempt's ack is lost; the resend is acknowledged.
    fake = FakeJetStream(lambda i, msg: None if i == 0 else ack(7))
    await raw_client.subscribe("jetq.task.work.job", cb=fake.handle)
    await raw_client.flush()
    producer = await AsyncProducer.connect(config_for(nats_server, request_timeout=0.3))
    try:
        result = await within("retried enqueue", producer.enqueue_detailed("work", "job", {"n": 1}))
    finally:
        await producer.close()
    assert result.sequence == 7
    assert len(fake.requests) == 2
    ids = {m.headers["Nats-Msg-Id"] for m in fake.requests if m.headers}
    assert ids == {result.id}, "every attempt carries the same Nats-Msg-Id"
    assert fake.requests[0].data == fake.requests[1].data
    assert fake.requests[0].headers == fake.requests[1].headers, "the resend is byte for byte the same"


async def test_a_retried_publish_of_our_own_id_is_not_a_duplicate(nats_server: NatsServer, raw_client: NatsClient) -> None:
    # The first attempt was stored but its ack was lost; the resend is answered "duplicate"
    # by the server. With a generated id that is this very task (as the Rust producer
    # decides); with the caller's key it may be an earlier enqueue, so it stays a duplicate.
    fake = FakeJetStream(lambda i, msg: None if i % 2 == 0 else ack(7, duplicate=True))
    await raw_client.subscribe("jetq.task.work.job", cb=fake.handle)
    await raw_client.flush()
    producer = await AsyncProducer.connect(config_for(nats_server, request_timeout=0.3))
    try:
        generated = await within("retried enqueue", producer.enqueue_detailed("work", "job", {"n": 1}))
        keyed = await within("retried keyed enqueue", producer.enqueue_detailed("work", "job", {"n": 2}, key="order-7"))
        [batched] = await within("retried batch", producer.enqueue_many([("work", "job", {"n": 3})]))
    finally:
        await producer.close()
    assert len(fake.requests) == 6, "every enqueue needed a second attempt"
    assert generated.sequence == 7 and not generated.duplicate
    assert keyed.sequence == 7 and keyed.duplicate
    assert isinstance(batched, jetq.Enqueued) and not batched.duplicate


async def test_a_first_attempt_answered_duplicate_is_a_duplicate_even_with_a_generated_id(
    nats_server: NatsServer, raw_client: NatsClient
) -> None:
    # Only a retry can collide with our own earlier attempt; a first attempt reported as a
    # duplicate is reported as such.
    fake = FakeJetStream(lambda i, msg: ack(3, duplicate=True))
    await raw_client.subscribe("jetq.task.work.job", cb=fake.handle)
    await raw_client.flush()
    producer = await AsyncProducer.connect(config_for(nats_server))
    try:
        result = await within("enqueue", producer.enqueue_detailed("work", "job", {"n": 1}))
    finally:
        await producer.close()
    assert len(fake.requests) == 1 and result.duplicate


async def test_no_ack_after_every_attempt_is_a_timeout_naming_the_id(nats_server: NatsServer, raw_client: NatsClient) -> None:
    fake = FakeJetStream(lambda i, msg: None)
    await raw_client.subscribe("jetq.task.work.job", cb=fake.handle)
    await raw_client.flush()
    producer = await AsyncProducer.connect(config_for(nats_server, request_timeout=0.3, publish_attempts=3))
    started = time.monotonic()
    try:
        with pytest.raises(Timeout) as caught:
            await within("timeout", producer.enqueue("work", "job", {"n": 1}, key="order-9"))
    finally:
        await producer.close()
    elapsed = time.monotonic() - started
    assert caught.value.id == "order-9" and caught.value.attempts == 3
    assert "retry with the same key" in str(caught.value)
    assert len(fake.requests) == 3
    assert 0.8 < elapsed < 5, elapsed


async def test_a_retryable_reply_is_resent_until_the_retry_budget_is_spent(nats_server: NatsServer, raw_client: NatsClient) -> None:
    # A JetStream 503 ("temporarily unavailable") stores nothing: resent with the same id after
    # 0.25, 0.5, 1 and 0.25 s — the budget is 1 s x 2 attempts (vectors: retry_pauses) — then
    # reported. Attempts alone would have given up after 2 sends.
    unavailable = b'{"error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}'
    fake = FakeJetStream(lambda i, msg: unavailable)
    await raw_client.subscribe("jetq.task.work.job", cb=fake.handle)
    await raw_client.flush()
    producer = await AsyncProducer.connect(config_for(nats_server, request_timeout=1.0, publish_attempts=2))
    started = time.monotonic()
    try:
        with pytest.raises(jetq.Rejected):
            await within("budget", producer.enqueue("work", "job", {"n": 1}, key="order-10"))
    finally:
        await producer.close()
    elapsed = time.monotonic() - started
    assert len(fake.requests) == 5
    assert {m.headers["Nats-Msg-Id"] for m in fake.requests if m.headers} == {"order-10"}
    assert 1.9 < elapsed < 4, elapsed


async def test_an_election_within_the_budget_is_ridden_through(nats_server: NatsServer, raw_client: NatsClient) -> None:
    # No leader for 1.5 s (503s), then a leader stores the task: the enqueue succeeds, once.
    unavailable = b'{"error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}'
    started = time.monotonic()
    fake = FakeJetStream(lambda i, msg: unavailable if time.monotonic() - started < 1.5 else ack(7))
    await raw_client.subscribe("jetq.task.work.job", cb=fake.handle)
    await raw_client.flush()
    producer = await AsyncProducer.connect(config_for(nats_server, request_timeout=1.0, publish_attempts=2))
    try:
        started = time.monotonic()
        enqueued = await within("election", producer.enqueue_detailed("work", "job", {"n": 1}))
    finally:
        await producer.close()
    assert enqueued.sequence == 7 and not enqueued.duplicate
    assert len(fake.requests) >= 4


async def test_a_full_stream_refuses_new_tasks_and_keeps_the_old_ones(nats_server: NatsServer) -> None:
    await create_task_stream(nats_server.url, max_msgs=3)
    producer = await AsyncProducer.connect(config_for(nats_server))
    try:
        for n in range(3):
            await within("fill", producer.enqueue("work", "job", {"n": n}))
        with pytest.raises(StreamFull) as caught:
            await within("full", producer.enqueue("work", "job", {"n": 3}))
        assert "maximum messages" in caught.value.description
    finally:
        await producer.close()
    assert [json.loads(t.payload)["n"] for t in await stored_tasks(nats_server.url)] == [0, 1, 2]


async def test_a_message_over_max_payload_is_too_large_and_the_connection_survives() -> None:
    server = NatsServer(max_payload=64 * 1024)
    try:
        await create_task_stream(server.url)
        producer = await AsyncProducer.connect(config_for(server))
        try:
            with pytest.raises(TooLarge) as caught:
                await within("big", producer.enqueue("work", "job", {"note": "x" * (100 * 1024)}))
            assert caught.value.size > 100 * 1024 and caught.value.limit == 64 * 1024
            # Payload alone under the limit, headers push it over: still refused client-side,
            # since the server would close the connection.
            near = 64 * 1024 - 40
            with pytest.raises(TooLarge):
                await within("near", producer.enqueue("work", "job", "y" * near))
            assert producer.is_connected
            assert await within("small", producer.enqueue("work", "job", {"n": 1}))
        finally:
            await producer.close()
    finally:
        server.stop()


async def test_the_streams_max_message_size_is_too_large(nats_server: NatsServer) -> None:
    await create_task_stream(nats_server.url, max_msg_size=1024)
    async with await AsyncProducer.connect(config_for(nats_server)) as producer:
        with pytest.raises(TooLarge) as caught:
            await within("big", producer.enqueue("work", "job", {"note": "x" * 4096}))
        assert caught.value.limit is None


async def test_a_missing_stream_is_no_stream(nats_server: NatsServer) -> None:
    async with await AsyncProducer.connect(config_for(nats_server)) as producer:
        with pytest.raises(NoStream) as caught:
            await within("no stream", producer.enqueue("work", "job", {"n": 1}))
    assert caught.value.subject == "jetq.task.work.job"


async def test_enqueue_while_the_server_is_down_fails_in_bounded_time_then_recovers(nats_server: NatsServer, task_stream: str) -> None:
    producer = await AsyncProducer.connect(config_for(nats_server, request_timeout=0.5, publish_attempts=2))
    try:
        await within("before", producer.enqueue("work", "job", {"n": 0}))
        nats_server.kill()
        started = time.monotonic()
        with pytest.raises((NotConnected, Timeout)) as caught:
            await within("outage", producer.enqueue("work", "job", {"n": 1}))
        assert isinstance(caught.value, NotConnected), f"the connection is down: {caught.value!r}"
        assert time.monotonic() - started < 5
        nats_server.restart()
        deadline = time.monotonic() + 15
        while True:
            try:
                await producer.enqueue("work", "job", {"n": 2}, key="after-restart")
                break
            except (NotConnected, Timeout):
                assert time.monotonic() < deadline, "the producer reconnects after a restart"
                await asyncio.sleep(0.2)
    finally:
        await producer.close()
    stored = await stored_tasks(nats_server.url)
    assert [json.loads(t.payload)["n"] for t in stored][0] == 0
    assert stored[-1].headers["Nats-Msg-Id"] == "after-restart"


async def test_connecting_to_nothing_is_a_connect_error_within_the_timeout() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(ConnectError) as caught:
        await within("connect", AsyncProducer.connect(nats_url=f"nats://127.0.0.1:{port}", connect_timeout=1.0))
    assert time.monotonic() - started < 4
    assert str(port) in str(caught.value)


def test_servers_older_than_2_10_are_refused_by_version() -> None:
    assert parse_version("2.15.1") == (2, 15, 1)
    assert parse_version("v2.10.0-beta.3") == (2, 10, 0)
    assert parse_version("2.11") == (2, 11, 0)
    assert parse_version("garbage") is None
    with pytest.raises(ServerTooOld) as caught:
        check_server_version("2.9.10")
    assert "2.9.10" in str(caught.value) and "2.10.0" in str(caught.value)
    assert check_server_version("2.10.0") == (2, 10, 0)
    with pytest.raises(ServerTooOld):
        check_server_version("")


async def test_a_real_old_server_is_refused_at_connect() -> None:
    binary = os.environ.get("JETQ_TEST_OLD_NATS_SERVER", "/usr/sbin/nats-server")
    if not os.access(binary, os.X_OK):
        pytest.skip(f"no old nats-server at {binary} (scripts/test.sh installs Debian's 2.9)")
    server = NatsServer(binary, jetstream=False)
    try:
        with pytest.raises(ServerTooOld) as caught:
            await within("connect", AsyncProducer.connect(nats_url=server.url))
        assert caught.value.found.startswith("2.9")
    finally:
        server.stop()


async def test_caller_errors_are_raised_before_anything_is_sent(producer: AsyncProducer, nats_server: NatsServer) -> None:
    with pytest.raises(DelayTooLong) as caught:
        await producer.enqueue("work", "job", {"n": 1}, delay=dt.timedelta(days=31))
    assert "maximum delay" in str(caught.value)
    with pytest.raises(InvalidOption):
        await producer.enqueue("work", "job", {"n": 1}, at=dt.datetime(2030, 1, 1))
    with pytest.raises(SerializeError):
        await producer.enqueue("work", "job", {"when": object()})
    with pytest.raises(SerializeError):
        await producer.enqueue("work", "job", {"x": float("nan")})
    for bad in (0, -1, True, 2.5):
        with pytest.raises(InvalidOption):
            await producer.enqueue("work", "job", {}, max_attempts=bad)  # type: ignore[arg-type]
    for bad_timeout in (0, -1.0, float("inf"), "5s"):
        with pytest.raises(InvalidOption):
            await producer.enqueue("work", "job", {}, timeout=bad_timeout)  # type: ignore[arg-type]
    assert await stored_tasks(nats_server.url) == []


async def test_an_invalid_explicit_traceparent_is_ignored_not_sent(producer: AsyncProducer, nats_server: NatsServer) -> None:
    """As in the Rust producer: a bad trace header must neither fail the enqueue nor reach the
    worker."""
    for bad in ("bad\nvalue", "garbage", "00-" + "0" * 32 + "-b7ad6b7169203331-01", "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"):
        await within("enqueue", producer.enqueue("work", "job", {}, traceparent=bad, tracestate="a=b"))
    stored = await stored_tasks(nats_server.url)
    assert len(stored) == 4
    assert all("traceparent" not in t.headers and "tracestate" not in t.headers for t in stored)


async def test_a_closed_producer_refuses_to_enqueue(nats_server: NatsServer, task_stream: str) -> None:
    producer = await AsyncProducer.connect(config_for(nats_server))
    await producer.close()
    await producer.close()  # idempotent
    with pytest.raises(ProducerClosed):
        await producer.enqueue("work", "job", {"n": 1})


async def test_from_client_uses_and_leaves_open_an_existing_connection(task_stream: str, raw_client: NatsClient) -> None:
    producer = await AsyncProducer.from_client(raw_client)
    assert await within("enqueue", producer.enqueue("work", "job", {"n": 1}))
    await producer.close()
    assert raw_client.is_connected, "the caller's connection stays open"


async def test_a_prefix_changes_subject_and_stream(nats_server: NatsServer) -> None:
    await create_task_stream(nats_server.url, "shop")
    async with await AsyncProducer.connect(config_for(nats_server, prefix="shop")) as producer:
        result = await within("enqueue", producer.enqueue_detailed("emails", "send_email", {}))
    assert result.stream == "SHOP_TASKS"
    [stored] = await stored_tasks(nats_server.url, "SHOP_TASKS")
    assert stored.subject == "shop.task.emails.send_email"


async def test_concurrent_enqueues_from_many_tasks(producer: AsyncProducer, nats_server: NatsServer) -> None:
    ids = await within("gather", asyncio.gather(*(producer.enqueue("work", "job", {"n": n}) for n in range(50))))
    assert len(set(ids)) == 50
    assert len(await stored_tasks(nats_server.url)) == 50
