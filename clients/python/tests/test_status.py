"""Task status from Python (docs/PROTOCOL.md §8) against a real nats-server: the opt-in header,
the ``queued`` record, the bucket the producer creates, cancellation, ``wait`` and its bounds, the
key encoding, and the typed errors. (Records written by the Rust worker: tests/test_rust_interop.py.)"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any, Dict

import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import DiscardPolicy, KeyValueConfig, StorageType

import jetq
from jetq import AsyncProducer, TaskState
from jetq.protocol import format_timestamp, parse_timestamp
from jetq.status import id_from_key, status_key
from jetq.testing import NatsServer, create_task_stream_sync, stored_tasks

from .support import config_for, within


def test_status_keys_are_the_documented_encoding() -> None:
    # The table of docs/PROTOCOL.md §8, and the Rust side's round-trip test.
    assert status_key("01J9ZQ5W3V7ZB4M8K2N6P0R1S3") == "01J9ZQ5W3V7ZB4M8K2N6P0R1S3"
    assert status_key("signup:ada@example.com") == "signup=3Aada=40example=2Ecom"
    assert status_key("a=b.c") == "a=3Db=2Ec"
    assert status_key("") == "="
    assert status_key("a.b") == "a=2Eb" != status_key("a=2Eb")
    printable = "".join(chr(c) for c in range(0x21, 0x7F))
    for id in ("", "..", "=", "=3A", "dead:12:x", "nightly-report:2026-11-28T02:00:00Z", "é ü", printable):
        key = status_key(id)
        assert all(c.isalnum() and c.isascii() or c in "_-=" for c in key), key
        assert id_from_key(key) == id
    for bad in ("=4", "=zz", "a.b", "=3a", "a b", "=FF"):
        assert id_from_key(bad) is None, bad


async def test_a_tracked_task_carries_the_header_and_gets_a_queued_record(
    producer: AsyncProducer, nats_server: NatsServer, raw_client: NatsClient
) -> None:
    result = await within("enqueue", producer.enqueue_detailed("exports", "generate_csv", {"rows": 3}, track_status=True))
    [stored] = await stored_tasks(nats_server.url)
    assert stored.headers["Jetq-Track-Status"] == "1"

    # The producer created the bucket (and the artifact store) as the Rust side would.
    js = raw_client.jetstream()
    kv_config = (await js.stream_info("KV_JETQ_STATUS")).config
    assert kv_config.max_msgs_per_subject == 1 and kv_config.max_age == 24 * 3600
    assert kv_config.storage == StorageType.FILE and kv_config.allow_direct
    assert kv_config.discard == DiscardPolicy.NEW and kv_config.deny_delete
    assert (await js.stream_info("OBJ_JETQ_ARTIFACTS")).config.subjects == [
        "$O.JETQ_ARTIFACTS.C.>",
        "$O.JETQ_ARTIFACTS.M.>",
    ]

    status = await within("status", producer.status(result.id))
    assert status is not None
    assert status.state is TaskState.QUEUED and not status.is_terminal
    assert (status.id, status.queue, status.task) == (result.id, "exports", "generate_csv")
    assert status.sequence == result.sequence and status.attempt == 0
    assert status.enqueued_at == stored.headers["Jetq-Enqueued-At"]
    assert [t.state for t in status.transitions] == [TaskState.QUEUED]
    # The stored bytes: compact JSON in the Rust field order.
    kv = await js.key_value("JETQ_STATUS")
    raw = (await kv.get(result.id)).value
    assert raw is not None and raw.startswith(b'{"id":"%s","queue":"exports","task":"generate_csv","state":"queued","sequence":' % result.id.encode())
    assert list(json.loads(raw)) == ["id", "queue", "task", "state", "sequence", "attempt", "enqueued_at", "updated_at", "transitions"]


async def test_untracked_tasks_touch_no_status_bucket(producer: AsyncProducer, raw_client: NatsClient) -> None:
    task_id = await within("enqueue", producer.enqueue("work", "job", {"n": 1}))
    names = [info.config.name for info in await raw_client.jetstream().streams_info()]
    assert "KV_JETQ_STATUS" not in names
    assert await within("status", producer.status(task_id)) is None, "the producer opens (creates) it only to read"


async def test_a_duplicate_never_resets_a_record(producer: AsyncProducer, raw_client: NatsClient) -> None:
    first = await within("first", producer.enqueue_detailed("work", "job", {}, key="k-1", track_status=True))
    assert (await producer.cancel("k-1")).cancelled
    second = await within("second", producer.enqueue_detailed("work", "job", {}, key="k-1", track_status=True))
    assert second.duplicate and second.sequence == first.sequence
    status = await producer.status("k-1")
    assert status is not None and status.state is TaskState.CANCELLED, "a duplicate enqueue writes nothing"


async def test_the_queued_write_follows_the_documented_rule(producer: AsyncProducer) -> None:
    """docs/PROTOCOL.md §8 "The producer's queued write": skipped for this task's or a later
    task's record (a delayed task's by the same enqueue instant, whatever form the worker wrote
    it in); an earlier task's record is replaced even when terminal."""
    store = producer._status
    await store.kv()

    async def put(id: str, record: Dict[str, Any]) -> None:
        kv = await store.kv()
        full = {"attempt": 1, "updated_at": "2026-11-27T07:00:01.000000Z", "transitions": [], **record}
        await kv.put(status_key(id), json.dumps(full).encode())

    async def state_of(id: str) -> Any:
        status = await producer.status(id)
        assert status is not None
        return status.state, status.sequence

    # An earlier task's terminal record (sequence 3) is replaced by the new task's (sequence 9).
    await put("reused", {"id": "reused", "queue": "work", "task": "job", "state": "succeeded", "sequence": 3})
    await store.write_queued("reused", "work", "job", 9, "2026-11-27T07:00:00.123000Z")
    assert await state_of("reused") == (TaskState.QUEUED, 9)
    # A worker was faster (same sequence, or a later task's): nothing is written.
    await put("faster", {"id": "faster", "queue": "work", "task": "job", "state": "running", "sequence": 9})
    await store.write_queued("faster", "work", "job", 9, "2026-11-27T07:00:00.123000Z")
    assert await state_of("faster") == (TaskState.RUNNING, 9)
    # A delayed task released and taken by a worker that wrote the same instant another way.
    await put("delayed", {"id": "delayed", "queue": "work", "task": "job", "state": "running", "sequence": 4,
                          "enqueued_at": "2026-11-27T07:00:00.123Z"})
    await store.write_queued("delayed", "work", "job", None, "2026-11-27T07:00:00.123000Z")
    assert await state_of("delayed") == (TaskState.RUNNING, 4)
    # ... but a record with another instant is an earlier task's: replaced.
    await store.write_queued("delayed", "work", "job", None, "2026-11-27T08:00:00.000000Z")
    assert await state_of("delayed") == (TaskState.QUEUED, None)


async def test_a_delayed_tracked_task_is_queued_without_a_sequence(producer: AsyncProducer) -> None:
    result = await within("enqueue", producer.enqueue_detailed("work", "job", {}, delay=3600, track_status=True, key="later:1"))
    assert result.stream == "JETQ_DELAYED"
    status = await producer.status("later:1")
    assert status is not None and status.state is TaskState.QUEUED
    assert status.sequence is None, "the delayed stream's sequence is not the task stream's"
    assert "sequence" not in status.raw


async def test_cancel_a_queued_task_then_again_then_an_unknown_one(producer: AsyncProducer) -> None:
    task_id = await within("enqueue", producer.enqueue("work", "job", {}, track_status=True))
    outcome = await within("cancel", producer.cancel(task_id))
    assert outcome.cancelled and outcome.status.state is TaskState.CANCELLED
    status = await producer.status(task_id)
    assert status is not None and status.state is TaskState.CANCELLED
    assert status.finished_at is not None and status.finished_at == status.updated_at
    assert [t.state for t in status.transitions] == [TaskState.QUEUED, TaskState.CANCELLED]
    again = await producer.cancel(task_id)
    assert again.already_finished and again.status.state is TaskState.CANCELLED
    with pytest.raises(jetq.StatusNotFound):
        await producer.cancel("no-such-task")
    # wait returns a terminal record at once.
    assert (await within("wait", producer.wait(task_id, 5))).state is TaskState.CANCELLED


async def test_cancelling_a_running_task_asks_its_handler_and_keeps_unknown_fields(
    producer: AsyncProducer, raw_client: NatsClient
) -> None:
    task_id = await producer.enqueue("work", "job", {}, track_status=True)
    kv = await raw_client.jetstream().key_value("JETQ_STATUS")
    entry = await kv.get(task_id)
    running = json.loads(entry.value or b"{}")
    running.update(state="running", attempt=1, started_at=format_timestamp(), future_field={"x": 1})
    await kv.update(task_id, json.dumps(running).encode(), last=entry.revision)
    outcome = await within("cancel", producer.cancel(task_id))
    assert outcome.requested and outcome.status.cancel_requested_at is not None
    stored = json.loads((await kv.get(task_id)).value or b"{}")
    assert stored["state"] == "running" and stored["future_field"] == {"x": 1}
    assert stored["cancel_requested_at"] == stored["updated_at"]
    assert (await producer.cancel(task_id)).requested, "asking twice changes nothing"


async def test_wait_returns_when_the_worker_writes_the_outcome_and_times_out_otherwise(
    producer: AsyncProducer, raw_client: NatsClient
) -> None:
    task_id = await producer.enqueue("work", "job", {}, track_status=True)
    with pytest.raises(jetq.WaitTimeout) as caught:
        await within("wait", producer.wait(task_id, 0.3))
    assert caught.value.last is not None and caught.value.last.state is TaskState.QUEUED
    assert caught.value.waited == 0.3 and "last state: queued" in str(caught.value)
    with pytest.raises(jetq.WaitTimeout) as unknown:
        await within("wait", producer.wait("nobody", 0.2))
    assert unknown.value.last is None

    kv = await raw_client.jetstream().key_value("JETQ_STATUS")

    async def worker() -> None:
        entry = await kv.get(task_id)
        record = json.loads(entry.value or b"{}")
        for state in ("running", "succeeded"):
            await asyncio.sleep(0.1)
            record.update(state=state, result={"rows": 3} if state == "succeeded" else None)
            record = {k: v for k, v in record.items() if v is not None}
            entry_revision = await kv.update(task_id, json.dumps(record).encode(), last=entry.revision)
            entry = await kv.get(task_id)
            assert entry.revision == entry_revision

    writer = asyncio.ensure_future(worker())
    done = await within("wait", producer.wait(task_id, 10))
    await writer
    assert done.state is TaskState.SUCCEEDED and done.result == {"rows": 3}


async def test_watch_yields_each_change_until_a_terminal_state(producer: AsyncProducer, raw_client: NatsClient) -> None:
    task_id = await producer.enqueue("work", "job", {}, track_status=True)
    kv = await raw_client.jetstream().key_value("JETQ_STATUS")
    seen = []

    async def follow() -> None:
        async for status in producer.watch(task_id):
            seen.append(status)
            if status.state is TaskState.QUEUED and len(seen) == 1:
                entry = await kv.get(task_id)
                record = json.loads(entry.value or b"{}")
                record.update(state="running", progress={"percent": 40.0, "message": "4 of 10", "at": format_timestamp()})
                await kv.update(task_id, json.dumps(record).encode(), last=entry.revision)
                entry = await kv.get(task_id)
                record.update(state="failed", error="boom", dead_reason="fatal")
                await kv.update(task_id, json.dumps(record).encode(), last=entry.revision)

    await within("watch", follow())
    assert [s.state for s in seen] == [TaskState.QUEUED, TaskState.RUNNING, TaskState.FAILED]
    assert seen[1].progress is not None and seen[1].progress.percent == 40.0
    assert seen[2].error == "boom" and seen[2].dead_reason == "fatal"


async def test_a_corrupt_record_is_a_typed_error(producer: AsyncProducer, raw_client: NatsClient) -> None:
    await producer.enqueue("work", "job", {}, track_status=True, key="bad-record")
    kv = await raw_client.jetstream().key_value("JETQ_STATUS")
    await kv.put("bad-record", b'{"state":"exploded"}')
    with pytest.raises(jetq.StatusCorrupt):
        await producer.status("bad-record")


async def test_without_provisioning_a_missing_bucket_is_unavailable_and_tasks_still_enqueue(
    nats_server: NatsServer, task_stream: str
) -> None:
    producer = await within("connect", AsyncProducer.connect(config_for(nats_server, provision=False)))
    try:
        task_id = await within("tracked enqueue", producer.enqueue("work", "job", {}, track_status=True))
        with pytest.raises(jetq.StatusUnavailable) as caught:
            await producer.status(task_id)
        assert "JETQ_STATUS" in str(caught.value)
        with pytest.raises(jetq.StatusUnavailable):
            await producer.cancel(task_id)
        # A worker (here: a producer that may provision) creates the bucket meanwhile.
        other = await within("connect", AsyncProducer.connect(config_for(nats_server)))
        try:
            assert await other.status("anything") is None
        finally:
            await other.close()
        # Enqueues do not look again for 30 s (no lookup per tracked enqueue) ...
        later = await within("tracked enqueue", producer.enqueue("work", "job", {}, track_status=True))
        # ... explicit calls always do, and find the bucket at once.
        assert await producer.status(later) is None, "no queued record: the enqueue did not look"
        third = await within("tracked enqueue", producer.enqueue("work", "job", {}, track_status=True))
        status = await producer.status(third)
        assert status is not None and status.state is TaskState.QUEUED, "once open, enqueues record again"
    finally:
        await producer.close()
    assert len(await stored_tasks(nats_server.url)) == 3, "status never decides whether a task is queued"


def test_the_blocking_producer_reads_waits_and_cancels(nats_server: NatsServer) -> None:
    create_task_stream_sync(nats_server.url)
    with jetq.Producer(config_for(nats_server)) as producer:
        task_id = producer.enqueue("exports", "generate_csv", {"rows": 1}, track_status=True)
        status = producer.status(task_id)
        assert status is not None and status.state is TaskState.QUEUED
        enqueued_at = parse_timestamp(status.enqueued_at or "")
        assert enqueued_at is not None
        with pytest.raises(jetq.WaitTimeout):
            producer.wait(task_id, 0.2)
        assert producer.cancel(task_id).cancelled
        assert producer.wait(task_id, 5).state is TaskState.CANCELLED
        assert producer.status("unknown") is None


async def test_artifacts_are_read_from_the_object_store_with_their_digest_checked(
    producer: AsyncProducer, raw_client: NatsClient, tmp_path: Path
) -> None:
    task_id = await producer.enqueue("exports", "generate_csv", {}, track_status=True)  # creates the store
    store = await raw_client.jetstream().object_store("JETQ_ARTIFACTS")
    content = b"row,customer,amount_cents\n" + b"".join(b"%d,c%d,%d\n" % (n, n, n * 7) for n in range(50_000))
    await store.put(f"{task_id}/export.csv", content)  # several 128 KiB chunks, as a worker writes it
    assert await within("artifact", producer.artifact(task_id, "export.csv")) == content
    target = tmp_path / "export.csv"
    with open(target, "wb") as file:
        size = await within("artifact_to", producer.artifact_to(task_id, "export.csv", file))
    assert size == len(content) and target.read_bytes() == content
    with pytest.raises(jetq.ArtifactNotFound):
        await producer.artifact(task_id, "other.csv")
    for bad in ("", ".hidden", "a/b", "x" * 129):
        with pytest.raises(jetq.InvalidArtifactName):
            await producer.artifact(task_id, bad)


async def test_without_an_artifact_store_an_artifact_is_not_found(producer: AsyncProducer) -> None:
    with pytest.raises(jetq.ArtifactNotFound):
        await within("artifact", producer.artifact("some-task", "export.csv"))


def test_the_blocking_watch_follows_changes_and_ends_at_a_terminal_state_or_its_timeout(nats_server: NatsServer) -> None:
    create_task_stream_sync(nats_server.url)
    with jetq.Producer(config_for(nats_server)) as producer:
        task_id = producer.enqueue("work", "job", {}, track_status=True)
        seen = []
        for status in producer.watch(task_id, timeout=10):
            seen.append(status.state)
            if status.state is TaskState.QUEUED:
                producer.cancel(task_id)  # the next version the server pushes
        assert seen == [TaskState.QUEUED, TaskState.CANCELLED]

        other = producer.enqueue("work", "job", {}, track_status=True)
        started = time.monotonic()
        assert [s.state for s in producer.watch(other, timeout=0.5)] == [TaskState.QUEUED]
        assert 0.4 < time.monotonic() - started < 5, "ends quietly when its time is up"
        # Abandoning a watch half-way stops it too.
        watch = producer.watch(other, timeout=10)
        assert next(watch).state is TaskState.QUEUED
        watch.close()
        assert producer.cancel(other).cancelled, "the producer is still usable"


async def test_an_artifact_that_does_not_match_its_digest_is_refused(producer: AsyncProducer, raw_client: NatsClient) -> None:
    await producer.enqueue("exports", "generate_csv", {}, track_status=True, key="task-9")  # creates the store
    js = raw_client.jetstream()
    store = await js.object_store("JETQ_ARTIFACTS")
    await store.put("task-9/export.csv", b"the real content\n")
    subject = "$O.JETQ_ARTIFACTS.M." + base64.urlsafe_b64encode(b"task-9/export.csv").decode()
    meta = json.loads((await js.get_last_msg("OBJ_JETQ_ARTIFACTS", subject)).data or b"")
    meta["digest"] = "SHA-256=" + base64.urlsafe_b64encode(b"\0" * 32).decode()
    await js.publish(subject, json.dumps(meta).encode(), headers={"Nats-Rollup": "sub"})
    with pytest.raises(jetq.StatusReadError) as caught:
        await within("artifact", producer.artifact("task-9", "export.csv"))
    assert "digest" in str(caught.value)


async def _write_catalog(raw_client: NatsClient, entries: Dict[str, bytes]) -> None:
    """Writes catalog entries as workers would (docs/PROTOCOL.md, Task-type catalog)."""
    js = raw_client.jetstream()
    kv = await js.create_key_value(KeyValueConfig(bucket="JETQ_CATALOG", history=1))
    for key, value in entries.items():
        await kv.put(key, value)


def _catalog_value(queue: str, task: str, tracked: bool) -> bytes:
    return json.dumps(
        {"queue": queue, "task": task, "max_attempts": 3, "timeout_ms": 60000, "tracked": tracked,
         "updated_at": "2026-12-07T04:00:00.000000Z", "added_later": [1]},
        separators=(",", ":"),
    ).encode()


async def test_a_type_the_catalog_marks_tracked_is_tracked_without_asking(
    producer: AsyncProducer, nats_server: NatsServer, raw_client: NatsClient
) -> None:
    await _write_catalog(
        raw_client,
        {
            "work.tracked_job": _catalog_value("work", "tracked_job", True),
            "work.job": _catalog_value("work", "job", False),
            "work.broken": b"{not json",
        },
    )
    tracked = await within("enqueue", producer.enqueue_detailed("work", "tracked_job", {"n": 1}))
    status = await within("status", producer.status(tracked.id))
    assert status is not None and status.state is TaskState.QUEUED
    assert (status.queue, status.task, status.sequence) == ("work", "tracked_job", tracked.sequence)

    # Untracked, broken and missing entries change nothing.
    others = [await within("enqueue", producer.enqueue("work", name, {"n": 2})) for name in ("job", "broken", "absent")]
    for task_id in others:
        assert await within("status", producer.status(task_id)) is None

    # enqueue_many: every task of the tracked type, and only those.
    many = await within("enqueue_many", producer.enqueue_many([("work", "tracked_job", {"n": 3}), ("work", "job", {"n": 4})]))
    first, second = many
    assert isinstance(first, jetq.Enqueued) and isinstance(second, jetq.Enqueued)
    assert await within("status", producer.status(first.id)) is not None
    assert await within("status", producer.status(second.id)) is None

    stored = await stored_tasks(nats_server.url)
    assert [m.headers.get("Jetq-Track-Status") for m in stored] == ["1", None, None, None, "1", None]


async def test_without_a_catalog_nothing_is_tracked(producer: AsyncProducer, raw_client: NatsClient) -> None:
    task_id = await within("enqueue", producer.enqueue("work", "tracked_job", {"n": 1}))
    names = [info.config.name for info in await raw_client.jetstream().streams_info()]
    assert "KV_JETQ_STATUS" not in names and "KV_JETQ_CATALOG" not in names
    assert await within("status", producer.status(task_id)) is None
