"""Batches, chords and chains started by the Python producer (``jetq.workflows``) and run by a
real Rust worker process (the ``workflow_worker`` binary of tests/src/bin, which runs ``Job``
members on ``work.job``, ``Done`` callbacks on ``callbacks.done`` reporting on
``test.callback``, and ``Step`` links on ``work.step`` reporting on ``test.step``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Dict, List

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from jetq import AsyncProducer
from jetq import workflows as wf
from jetq.testing import NatsServer, RunningBinary, cargo_binary

from .rust import REPO
from .support import WAIT, config_for, within

class Reports:
    """Messages on a core subject, awaited with a bound."""

    def __init__(self) -> None:
        self.items: List[Any] = []
        self._changed = asyncio.Event()

    async def on(self, msg: Msg) -> None:
        data = msg.data.decode()
        try:
            self.items.append(json.loads(data))
        except ValueError:
            self.items.append(data)
        self._changed.set()

    async def until(self, what: str, check: Any, limit: float = WAIT) -> None:
        async def wait() -> None:
            while not check(self.items):
                self._changed.clear()
                await self._changed.wait()

        await within(what, wait(), limit)


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[NatsClient]:
    nc = await within("connect", nats.connect(nats_server.url, allow_reconnect=False))
    try:
        yield nc
    finally:
        await nc.close()


async def _start_worker(nats_server: NatsServer, client: NatsClient, **extra: str) -> RunningBinary:
    try:
        binary = cargo_binary("jetq-tests", "workflow_worker", REPO, "JETQ_TEST_WORKFLOW_WORKER_BIN")
    except RuntimeError as err:
        pytest.fail(f"{err}\n(these tests run the Rust workflow worker; deselect them with -m 'not rust')")
    ready = Reports()
    sub = await client.subscribe("test.ready", cb=ready.on)
    env = {
        "JETQ_NATS_URL": nats_server.url,
        "JETQ_ACK_WAIT": "5s",
        "JETQ_FETCH_EXPIRES": "500ms",
        "JETQ_CONCURRENCY": "4",
        "JETQ_QUEUES": "work,callbacks",
        "TEST_WORKER_NAME": "py",
        **extra,
    }
    worker = RunningBinary(binary, env)
    try:
        await ready.until("the workflow worker is ready", lambda items: len(items) > 0)
    except BaseException:
        worker.stop()
        raise
    finally:
        await sub.unsubscribe()
    return worker


@pytest.mark.rust
async def test_a_python_chord_and_chain_run_by_a_rust_worker(
    nats_server: NatsServer, client: NatsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The members go out in one atomic batch (the worker provisioned the task stream with
    # allow_atomic on this 2.12+ server), as the Rust producer sends them.
    atomic: List[int] = []
    real_atomic = wf._publish_atomic

    async def counting(producer: AsyncProducer, slice_: List[Any]) -> Any:
        stored = await real_atomic(producer, slice_)
        if stored is not None:
            atomic.append(len(stored))
        return stored

    monkeypatch.setattr(wf, "_publish_atomic", counting)
    callbacks, steps = Reports(), Reports()
    await client.subscribe("test.callback", cb=callbacks.on)
    await client.subscribe("test.step", cb=steps.on)
    await client.flush()
    worker = await _start_worker(nats_server, client)
    producer = await within("producer", AsyncProducer.connect(config_for(nats_server)))
    try:
        # A callback type no worker handles is refused (the worker wrote the catalog).
        with pytest.raises(wf.UnknownCallback):
            await wf.Batch(producer).add("work", "job", {"n": 1}).on_success("callbacks", "nobody", {}).enqueue()

        # A chord of 5 members, each leaving {"n": n}; both callbacks fire once with the summary.
        batch = wf.Batch(producer, id="py-chord", chord=True)
        for n in range(5):
            batch.add("work", "job", {"n": n, "note": "result"}, key=f"py-chord-{n}")
        batch.on_success("callbacks", "done", {"which": "on_success"})
        batch.on_complete("callbacks", "done", {"which": "on_complete"})
        handle = await within("enqueue the chord", batch.enqueue())
        assert len(handle.members) == 5
        assert atomic == [5]
        sequences = [m.sequence for m in handle.members]
        assert sequences == list(range(sequences[0], sequences[0] + 5))

        # A chain a -> b (with a's result) -> c.
        chain = (
            wf.Chain("py-chain")
            .then("work", "step", {"name": "a"})
            .then_with_previous("work", "step", {"name": "b"})
            .then("work", "step", {"name": "c"})
        )
        await within("start the chain", wf.enqueue_chain(producer, chain))

        await callbacks.until("both callbacks", lambda items: len(items) >= 2)
        await steps.until("three links", lambda items: len(items) >= 3)
        by_which = {c["which"]: c for c in callbacks.items}
        assert set(by_which) == {"on_success", "on_complete"}
        for which, report in by_which.items():
            assert report["id"] == f"batch:py-chord:{which}"
            summary = report["batch"]
            assert (summary["id"], summary["total"], summary["succeeded"], summary["dead"]) == ("py-chord", 5, 5, 0)
            assert sorted(r["result"]["n"] for r in summary["results"]) == [0, 1, 2, 3, 4]
        assert [s["name"] for s in steps.items] == ["a", "b", "c"]
        assert steps.items[1]["previous"] == {"from": "a"}

        # A callback is recorded done (`done_at`) only after its publish was acknowledged, so
        # the callback task can run, and report, before its firing is recorded: watch the batch
        # record until both are.
        record_watch = await (await wf._store(producer)).watch(wf.record_key("py-chord"))

        async def callbacks_recorded() -> None:
            async for entry in record_watch:
                record = json.loads(entry.value) if entry is not None and entry.value else {}
                if all((record.get(f) or {}).get("done_at") for f in ("completed", "succeeded_all")):
                    return

        try:
            await within("the chord's callbacks recorded as done", callbacks_recorded())
        finally:
            await record_watch.stop()
        status = await wf.batch_status(producer, "py-chord")
        assert status is not None
        assert (status.total, status.pending, status.succeeded, status.dead) == (5, 0, 5, 0)
        assert status.completed and status.succeeded_all

        async def chain_done() -> None:
            while True:
                state = await wf.chain_status(producer, "py-chain")
                if state is not None and state.state == "succeeded":
                    return
                await asyncio.sleep(0.05)

        await within("the chain record says succeeded", chain_done())

        # An open batch with a dead member: added and closed from Python after its members
        # finished, so the producer's close fires on_complete (and not on_success).
        await wf.Batch(producer, id="py-open", keep_open=True).on_complete(
            "callbacks", "done", {"which": "open_complete"}
        ).on_success("callbacks", "done", {"which": "open_success"}).add("work", "job", {"n": 10}).enqueue()
        await wf.batch_add(producer, "py-open", [wf.Member("work", "job", {"n": 11, "note": "fail"})])

        async def all_finished() -> None:
            while True:
                state = await wf.batch_status(producer, "py-open")
                if state is not None and state.pending == 0:
                    return
                await asyncio.sleep(0.05)

        await within("the open batch's members finished", all_finished())
        assert not (await wf.batch_status(producer, "py-open") or status).completed  # open: waits
        await wf.batch_close(producer, "py-open")
        await callbacks.until("the open batch's on_complete", lambda items: any(c["which"] == "open_complete" for c in items))
        open_status = await wf.batch_status(producer, "py-open")
        assert open_status is not None
        assert (open_status.total, open_status.succeeded, open_status.dead) == (2, 1, 1)
        assert open_status.completed and not open_status.succeeded_all

        # Exactly once: let redeliveries (none expected) show, then count the runs (the task
        # stream is a work queue: acked tasks are gone, so the runs and their sequences tell).
        await asyncio.sleep(1.0)
        assert len({c["sequence"] for c in callbacks.items}) == len(callbacks.items)
        assert all(c["attempt"] == 1 for c in callbacks.items)
        assert [c["which"] for c in callbacks.items].count("on_success") == 1
        assert [c["which"] for c in callbacks.items].count("on_complete") == 1
        assert [c["which"] for c in callbacks.items].count("open_complete") == 1
        assert "open_success" not in [c["which"] for c in callbacks.items]
        assert len(steps.items) == 3 and all(s["attempt"] == 1 for s in steps.items)
    finally:
        await producer.close()
        worker.stop()


@pytest.mark.rust
async def test_batch_status_counts_the_member_a_rust_worker_runs_as_running(
    nats_server: NatsServer, client: NatsClient
) -> None:
    # The sleeping member runs (listed in the worker's presence record with its batch) while
    # the other one finishes.
    worker = await _start_worker(nats_server, client, JETQ_PRESENCE_INTERVAL="200ms")
    producer = await within("producer", AsyncProducer.connect(config_for(nats_server)))
    try:
        batch = wf.Batch(producer, id="py-running", skip_callback_check=True)
        batch.add("work", "job", {"n": 1, "note": "sleep:5000"}, key="py-running-1")
        batch.add("work", "job", {"n": 2}, key="py-running-2")
        await within("enqueue", batch.enqueue())

        async def until(check: Any) -> wf.BatchStatus:
            while True:
                status = await wf.batch_status(producer, "py-running")
                if status is not None and check(status):
                    return status
                await asyncio.sleep(0.05)

        status = await within("the sleeping member counted as running", until(lambda s: s.running == 1 and s.succeeded == 1))
        assert (status.total, status.pending, status.running, status.queued) == (2, 1, 1, 0)
        status = await within("both members finished", until(lambda s: s.pending == 0))
        assert (status.succeeded, status.running, status.queued) == (2, 0, 0)
    finally:
        await producer.close()
        worker.stop()


async def _members_test(nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch, allow_atomic: bool) -> List[int]:
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

    from jetq.testing import stored_tasks

    nc = await within("connect", nats.connect(nats_server.url, allow_reconnect=False))
    try:
        await nc.jetstream().add_stream(
            StreamConfig(
                name="JETQ_TASKS",
                subjects=["jetq.task.>"],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                discard=DiscardPolicy.NEW,
                allow_atomic=allow_atomic,
            )
        )
    finally:
        await nc.close()
    atomic: List[int] = []
    real_atomic = wf._publish_atomic

    async def counting(producer: AsyncProducer, slice_: List[Any]) -> Any:
        stored = await real_atomic(producer, slice_)
        if stored is not None:
            atomic.append(len(stored))
        return stored

    monkeypatch.setattr(wf, "_publish_atomic", counting)
    producer = await within("producer", AsyncProducer.connect(config_for(nats_server)))
    try:
        batch = wf.Batch(producer, id="big", skip_callback_check=True)
        for n in range(1200):
            batch.add("work", "job", {"n": n}, key=f"big-{n}")
        handle = await within("enqueue 1,200 members", batch.enqueue())
        assert [m.id for m in handle.members] == [f"big-{n}" for n in range(1200)]
        stored = await stored_tasks(nats_server.url)
        assert len(stored) == 1200
        assert all(t.headers.get("Jetq-Batch") == "big" for t in stored)
        by_id = {t.headers["Nats-Msg-Id"]: t.sequence for t in stored}
        assert all(by_id[m.id] == m.sequence for m in handle.members)
        status = await wf.batch_status(producer, "big")
        assert status is not None and (status.state, status.total, status.pending) == ("closed", 1200, 1200)
        # Enqueued again with the same id: refused, nothing more stored.
        with pytest.raises(wf.BatchExists):
            await wf.Batch(producer, id="big").add("work", "job", {"n": 0}, key="big-0").enqueue()
        assert len(await stored_tasks(nats_server.url)) == 1200
    finally:
        await producer.close()
    return atomic


async def test_a_large_batch_goes_out_in_atomic_slices_of_1000(nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    assert await _members_test(nats_server, monkeypatch, allow_atomic=True) == [1000, 200]


async def test_a_stream_without_atomic_publish_gets_the_members_one_by_one(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stream refuses the batch (10174): this producer stops trying and sends one by one.
    assert await _members_test(nats_server, monkeypatch, allow_atomic=False) == []
