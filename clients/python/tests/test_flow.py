"""Flow control in the Python client (docs/PROTOCOL.md §11) against the shared vectors of
docs/conformance/flow_control.json (the Rust side: tests/tests/flow_conformance.rs) and a real
nats-server: unique keys taken before publishing, one task per key under concurrent enqueues,
holders that vanished taken over, limit keys sent as headers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Dict

import nats
import pytest

from jetq import AsyncProducer, InvalidFlowOption, NotSupported, Unique
from jetq.flow import (
    acquire_slot,
    concurrency_entry,
    derive_unique_key,
    format_micros,
    interval_micros,
    judge_hold,
    limits_bucket,
    micros,
    pending_hold,
    rate_entry,
    reservation_entry,
    reserve,
    unique_bucket,
    unique_entry,
)
from jetq.protocol import Subjects
from jetq.testing import NatsServer, stored_tasks

from .support import config_for, within

VECTORS: Dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[3] / "docs" / "conformance" / "flow_control.json").read_text(encoding="utf-8")
)


def ids(vectors: Any) -> Any:
    return [v["name"] for v in vectors]


def flow_kwargs(vector: Dict[str, Any]) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = {}
    unique = vector.get("unique")
    if unique is not None:
        period = unique.get("period_ms")
        kwargs["unique"] = Unique(
            key=unique.get("key"),
            args=tuple(unique["args"]) if "args" in unique else None,
            scope=unique.get("scope", "active"),
            period=None if period is None else period / 1000,
        )
    if "limit_key" in vector:
        kwargs["limit_key"] = vector["limit_key"]
    if "delay_ms" in vector:
        kwargs["delay"] = vector["delay_ms"] / 1000
    return kwargs


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=ids(VECTORS["valid"]))
async def test_valid_vectors_are_stored_with_exactly_their_flow_headers(
    vector: Dict[str, Any], producer: AsyncProducer, nats_server: NatsServer
) -> None:
    result = await within(vector["name"], producer.enqueue_detailed(vector["queue"], vector["task"], vector["args"], **flow_kwargs(vector)))
    assert not result.duplicate
    stream = vector.get("stream", "JETQ_TASKS")
    [stored] = [t for t in await stored_tasks(nats_server.url, stream) if t.sequence == result.sequence]
    flow = {k: v for k, v in stored.headers.items() if k.startswith("Jetq-Unique") or k.startswith("Jetq-Limit")}
    assert flow == vector["headers"]


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=ids(VECTORS["invalid"]))
async def test_invalid_vectors_are_refused_before_anything_is_sent(
    vector: Dict[str, Any], producer: AsyncProducer, nats_server: NatsServer
) -> None:
    expected = NotSupported if vector["error"] == "unsupported" else InvalidFlowOption
    with pytest.raises(expected) as caught:
        await producer.enqueue_detailed("emails", "send_welcome", vector["args"], **flow_kwargs(vector))
    if vector["error"] == "invalid_key":
        assert (caught.value.what, caught.value.reason) == (vector["what"], vector["reason"])
    assert await stored_tasks(nats_server.url) == []


def test_derived_keys_entries_and_buckets_match() -> None:
    for vector in VECTORS["derived_keys"]:
        assert derive_unique_key(vector["args"], vector["fields"]) == vector["key"], vector
    for vector in VECTORS["entries"]:
        kind = vector["kind"]
        if kind == "unique":
            entry = unique_entry(vector["queue"], vector["task"], vector["key"])
        elif kind == "rate":
            entry = rate_entry(vector["queue"], vector["task"], vector["limit_key"])
        elif kind == "concurrency":
            entry = concurrency_entry(vector["queue"], vector["task"], vector["limit_key"])
        else:
            entry = reservation_entry(vector["sequence"])
        assert entry == vector["entry"], vector
    for vector in VECTORS["buckets"]:
        subjects = Subjects(vector["prefix"])
        assert (unique_bucket(subjects), limits_bucket(subjects)) == (vector["unique"], vector["limits"])


@pytest.mark.parametrize("vector", VECTORS["holds"], ids=ids(VECTORS["holds"]))
def test_holds_are_judged_alike(vector: Dict[str, Any]) -> None:
    assert judge_hold(vector["hold"], micros(vector["now"])) == vector["judgement"]


def test_the_pending_hold_has_the_vector_fields() -> None:
    first = VECTORS["holds"][0]["hold"]
    hold = pending_hold(first["task_id"], first["queue"], first["task"], first["scope"], micros(first["taken_at"]))
    assert hold == first


@pytest.mark.parametrize("vector", VECTORS["rate"], ids=ids(VECTORS["rate"]))
def test_the_rate_algorithm_gives_the_same_starts(vector: Dict[str, Any]) -> None:
    assert interval_micros(vector["rate"]) == vector["interval_us"]
    tat = vector["tat_us"]
    starts = []
    for arrival in vector["arrivals_us"]:
        start, tat = reserve(vector["rate"], vector["burst"], tat, arrival)
        starts.append(start)
    assert (starts, tat) == (vector["starts_us"], vector["tat_after_us"])


@pytest.mark.parametrize("vector", VECTORS["slots"], ids=ids(VECTORS["slots"]))
def test_slots_are_taken_alike(vector: Dict[str, Any]) -> None:
    result = acquire_slot(vector["slots"], vector["max"], vector["sequence"], vector["task_id"], micros(vector["now"]), micros(vector["until"]))
    assert result == vector["result"]


def test_bad_rates_are_refused() -> None:
    for rate in (-14, 0, float("inf")):
        with pytest.raises(InvalidFlowOption):
            interval_micros(rate)
    assert format_micros(micros("2026-11-27T07:00:00.123456Z") or 0) == "2026-11-27T07:00:00.123456Z"


async def test_fifty_concurrent_enqueues_of_one_key_make_one_task(nats_server: NatsServer, task_stream: str) -> None:
    producers = [await AsyncProducer.connect(config_for(nats_server)) for _ in range(5)]
    try:
        calls = [p.enqueue_detailed("emails", "send_welcome", {"user": i}, unique=Unique(key="welcome:42")) for p in producers for i in range(10)]
        results = await within("50 enqueues", asyncio.gather(*calls))
    finally:
        for p in producers:
            await p.close()
    first = [r for r in results if not r.duplicate]
    assert len(first) == 1
    assert {r.id for r in results} == {first[0].id}
    assert len(await stored_tasks(nats_server.url)) == 1


async def test_a_holder_gone_from_the_stream_frees_the_key(producer: AsyncProducer, nats_server: NatsServer) -> None:
    held = await producer.enqueue_detailed("emails", "send_welcome", {"user": 1}, unique=Unique(key="k"))
    again = await producer.enqueue_detailed("emails", "send_welcome", {"user": 1}, unique=Unique(key="k"))
    assert again.duplicate and again.id == held.id and again.sequence == held.sequence
    nc = await nats.connect(nats_server.url)
    try:
        await nc.jetstream().delete_msg("JETQ_TASKS", held.sequence)
    finally:
        await nc.close()
    retaken = await producer.enqueue_detailed("emails", "send_welcome", {"user": 1}, unique=Unique(key="k"))
    assert not retaken.duplicate and retaken.id != held.id
    # A Rust worker reads the hold the Python producer confirmed.
    nc = await nats.connect(nats_server.url)
    try:
        kv = await nc.jetstream().key_value("JETQ_UNIQUE")
        hold = json.loads((await kv.get("emails.send_welcome.k")).value)
    finally:
        await nc.close()
    assert (hold["task_id"], hold["state"], hold["sequence"], hold["scope"]) == (retaken.id, "queued", retaken.sequence, "active")


def test_the_blocking_producer_takes_unique_keys_and_sends_limit_keys(nats_server: NatsServer, task_stream: str) -> None:
    from jetq import Producer

    with Producer(config_for(nats_server)) as producer:
        first = producer.enqueue_detailed("emails", "send_welcome", {"user": 7}, unique=Unique(key="welcome:7"), limit_key="tenant-1")
        second = producer.enqueue_detailed("emails", "send_welcome", {"user": 7}, unique=Unique(key="welcome:7"))
        assert not first.duplicate
        assert second.duplicate and second.id == first.id
        with pytest.raises(InvalidFlowOption):
            producer.enqueue("emails", "send_welcome", {}, limit_key="two words")


@pytest.mark.rust
async def test_a_rust_worker_releases_the_key_a_python_producer_took(nats_server: NatsServer) -> None:
    """Python takes the key, the Rust ``test_worker`` runs the task and releases the key when it
    succeeds (scope ``active``): the next Python enqueue is a new task."""
    from jetq.testing import RunningBinary

    from .rust import rust_binaries, worker_env

    nc = await nats.connect(nats_server.url)
    ready: "asyncio.Queue[str]" = asyncio.Queue()
    done: "asyncio.Queue[str]" = asyncio.Queue()

    async def on_ready(msg: Any) -> None:
        await ready.put(msg.data.decode())

    async def on_done(msg: Any) -> None:
        await done.put(msg.data.decode())

    await nc.subscribe("test.ready", cb=on_ready)
    await nc.subscribe("test.done", cb=on_done)
    await nc.flush()
    worker = RunningBinary(rust_binaries()["test_worker"], worker_env(nats_server.url, "rust"))
    producer = await AsyncProducer.connect(config_for(nats_server))
    try:
        await within("the Rust worker to pull", ready.get())
        unique = Unique(key="report:acme")
        held = await producer.enqueue_detailed("work", "job", {"n": 1, "note": "sleep:800"}, unique=unique)
        dup = await producer.enqueue_detailed("work", "job", {"n": 2, "note": ""}, unique=unique)
        assert dup.duplicate and dup.id == held.id, "held while queued or running"
        report = await within("the Rust worker to finish the task", done.get())
        assert report.split(" ")[3] == held.id
        kv = await nc.jetstream().key_value("JETQ_UNIQUE")

        async def released() -> None:
            while True:
                try:
                    await kv.get("work.job.report=3Aacme")
                except nats.js.errors.KeyNotFoundError:
                    return
                await asyncio.sleep(0.05)

        await within("the Rust worker to release the key", released())
        fresh = await producer.enqueue_detailed("work", "job", {"n": 3, "note": ""}, unique=unique)
        assert not fresh.duplicate and fresh.id != held.id
    finally:
        await producer.close()
        worker.stop()
        await nc.close()


async def test_debounce_publishes_delayed_tasks_and_the_key_names_the_last(producer: AsyncProducer, nats_server: NatsServer) -> None:
    unique = Unique(key="reindex:acme", scope="debounce", period=60)
    first = await producer.enqueue_detailed("work", "job", {"n": 1}, unique=unique)
    second = await producer.enqueue_detailed("work", "job", {"n": 2}, unique=unique)
    assert not first.duplicate and not second.duplicate
    assert first.stream == second.stream == "JETQ_DELAYED"
    delayed = {t.headers["Nats-Msg-Id"]: t for t in await stored_tasks(nats_server.url, "JETQ_DELAYED")}
    assert set(delayed) == {first.id, second.id}
    for task in delayed.values():
        assert (task.headers["Jetq-Unique-Key"], task.headers["Jetq-Unique-Scope"]) == ("reindex:acme", "debounce")
        assert "Jetq-Not-Before" in task.headers
    nc = await nats.connect(nats_server.url)
    try:
        kv = await nc.jetstream().key_value("JETQ_UNIQUE")
        hold = json.loads((await kv.get("work.job.reindex=3Aacme")).value)
    finally:
        await nc.close()
    assert (hold["task_id"], hold["scope"], hold["state"], hold["sequence"]) == (second.id, "debounce", "delayed", second.sequence)


@pytest.mark.rust
async def test_a_python_debounce_burst_runs_once_on_the_rust_side(nats_server: NatsServer) -> None:
    """Python enqueues a burst of one debounce key; the Rust scheduler releases every task and
    the Rust ``test_worker`` runs only the last one (the others it drops as replaced)."""
    from jetq.testing import RunningBinary

    from .rust import rust_binaries, start_scheduler, worker_env

    binaries = rust_binaries()
    nc = await nats.connect(nats_server.url)
    ready: "asyncio.Queue[str]" = asyncio.Queue()
    started: "asyncio.Queue[str]" = asyncio.Queue()

    async def on_ready(msg: Any) -> None:
        await ready.put(msg.data.decode())

    async def on_started(msg: Any) -> None:
        await started.put(msg.data.decode())

    await nc.subscribe("test.ready", cb=on_ready)
    await nc.subscribe("test.started", cb=on_started)
    await nc.flush()
    worker = RunningBinary(binaries["test_worker"], worker_env(nats_server.url, "rust"))
    scheduler = start_scheduler(binaries["jetq-scheduler"], nats_server.url)
    producer = await AsyncProducer.connect(config_for(nats_server))
    try:
        await within("the Rust worker to pull", ready.get())
        unique = Unique(key="reindex:acme", scope="debounce", period=1.0)
        results = []
        for n in (1, 2, 3):
            results.append(await producer.enqueue_detailed("work", "job", {"n": n, "note": ""}, unique=unique))
            await asyncio.sleep(0.2)
        report = await within("the last task to run", started.get(), 20)
        worker_name, n, attempt, id = report.split(" ", 3)
        assert (int(n), id) == (3, results[-1].id), report
        await asyncio.sleep(2.5)
        assert started.empty(), "a replaced task ran"
        assert await stored_tasks(nats_server.url, "JETQ_DELAYED") == []
    finally:
        await producer.close()
        scheduler.stop()
        worker.stop()
        await nc.close()
