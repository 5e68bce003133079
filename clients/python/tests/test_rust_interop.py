"""Python enqueues, Rust runs: a real nats-server, the real ``jetq-scheduler`` binary releasing
delayed tasks and the real ``test_worker`` binary running them and tracking their status
(see tests/rust.py). Proves that delayed tasks and status records written by this client are the
ones the Rust side reads, and the other way round."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import AsyncIterator, Awaitable, Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from jetq import AsyncProducer, TaskState
from jetq.protocol import parse_timestamp
from jetq.testing import NatsServer, RunningBinary, stored_tasks

from .rust import rust_binaries, start_scheduler, worker_env
from .support import WAIT, config_for, within

pytestmark = pytest.mark.rust

T = TypeVar("T")
#: How long a task may take from its due time (or enqueue) to its outcome in these tests.
RUN_WAIT = 30.0


@pytest.fixture(scope="session")
def binaries() -> Dict[str, str]:
    return rust_binaries()


class Reports:
    """What the test workers report on core NATS: ``(worker, n, attempt, id)`` per start."""

    def __init__(self) -> None:
        self.started: List[Tuple[str, int, int, str]] = []
        self.done: List[Tuple[str, int, int, str]] = []
        self.ready: "asyncio.Queue[str]" = asyncio.Queue()

    @staticmethod
    def _parse(msg: Msg) -> Tuple[str, int, int, str]:
        worker, n, attempt, id = msg.data.decode().split(" ", 3)
        return worker, int(n), int(attempt), id

    async def on_started(self, msg: Msg) -> None:
        self.started.append(self._parse(msg))

    async def on_done(self, msg: Msg) -> None:
        self.done.append(self._parse(msg))

    async def on_ready(self, msg: Msg) -> None:
        await self.ready.put(msg.data.decode())


@pytest.fixture
async def reports(nats_server: NatsServer) -> AsyncIterator[Reports]:
    nc = await within("observer", nats.connect(nats_server.url, allow_reconnect=False))
    collected = Reports()
    await nc.subscribe("test.started", cb=collected.on_started)
    await nc.subscribe("test.done", cb=collected.on_done)
    await nc.subscribe("test.ready", cb=collected.on_ready)
    await nc.flush()
    try:
        yield collected
    finally:
        await nc.close()


StartWorker = Callable[[str], Awaitable[RunningBinary]]


@pytest.fixture
async def start_worker(nats_server: NatsServer, binaries: Dict[str, str], reports: Reports) -> AsyncIterator[StartWorker]:
    """Starts a ``test_worker`` process and waits until it pulls (it provisions the streams)."""
    started: List[RunningBinary] = []

    async def start(name: str) -> RunningBinary:
        process = RunningBinary(binaries["test_worker"], worker_env(nats_server.url, name))
        started.append(process)

        async def ready() -> None:
            while await reports.ready.get() != name:
                pass

        try:
            await asyncio.wait_for(ready(), timeout=WAIT)
        except asyncio.TimeoutError:
            process.check_alive()
            pytest.fail(f"test_worker {name} did not report ready within {WAIT}s:\n{process.logs()[-4000:]}")
        return process

    try:
        yield start
    finally:
        for process in started:
            process.stop()


@pytest.fixture
def scheduler(nats_server: NatsServer, binaries: Dict[str, str]) -> Iterator[RunningBinary]:
    process = start_scheduler(binaries["jetq-scheduler"], nats_server.url)
    try:
        yield process
    finally:
        process.stop()


async def eventually(what: str, check: Callable[[], Awaitable[Optional[T]]], limit: float = WAIT) -> T:
    """Re-checks (every 50 ms) until ``check`` returns a value, failing after ``limit`` seconds."""

    async def poll() -> T:
        while True:
            value = await check()
            if value is not None:
                return value
            await asyncio.sleep(0.05)

    return await within(what, poll(), limit)


def _time(text: Optional[str]) -> dt.datetime:
    parsed = parse_timestamp(text or "")
    assert parsed is not None, text
    return parsed


async def test_a_delayed_task_is_released_by_the_rust_scheduler_and_run_by_a_rust_worker_not_before_its_due_time(
    nats_server: NatsServer, start_worker: StartWorker, scheduler: RunningBinary, reports: Reports
) -> None:
    worker = await start_worker("w1")
    producer = await within("connect", AsyncProducer.connect(config_for(nats_server)))
    try:
        by_delay = await within(
            "delayed enqueue",
            producer.enqueue_detailed("work", "job", {"n": 1, "note": "delay"}, delay=2.5, track_status=True),
        )
        at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1.5)
        by_at = await within(
            "enqueue at", producer.enqueue_detailed("work", "job", {"n": 2, "note": "at"}, at=at, key="py-at-2", track_status=True)
        )
        assert by_delay.stream == by_at.stream == "JETQ_DELAYED"
        waiting = {t.headers["Nats-Msg-Id"]: t for t in await stored_tasks(nats_server.url, "JETQ_DELAYED")}
        assert set(waiting) == {by_delay.id, "py-at-2"}
        due = {id: _time(t.headers["Jetq-Not-Before"]) for id, t in waiting.items()}
        assert due["py-at-2"] == at.replace(microsecond=at.microsecond)
        for id in due:
            queued = await producer.status(id)
            assert queued is not None and queued.state is TaskState.QUEUED and queued.sequence is None

        for id, n in ((by_delay.id, 1), ("py-at-2", 2)):
            done = await within(f"task {n}", producer.wait(id, RUN_WAIT), RUN_WAIT + 5)
            assert done.state is TaskState.SUCCEEDED, done
            started_at = _time(done.started_at)
            assert started_at >= due[id], f"task {n} started {due[id] - started_at} before its due time"
            assert started_at - due[id] < dt.timedelta(seconds=10), "and not long after"
            assert done.attempt == 1 and done.max_attempts == 3, "the Rust type's settings"
            assert done.sequence is not None, "the worker recorded its task-stream sequence"
            assert done.enqueued_at == waiting[id].headers["Jetq-Enqueued-At"], "released with its headers"
            assert [t.state for t in done.transitions] == [TaskState.QUEUED, TaskState.RUNNING, TaskState.SUCCEEDED]
        assert sorted((n, id) for _, n, _, id in reports.started) == [(1, by_delay.id), (2, "py-at-2")]

        async def released() -> Optional[bool]:
            return True if await stored_tasks(nats_server.url, "JETQ_DELAYED") == [] else None

        await eventually("the scheduler deletes what it released", released)
    finally:
        await producer.close()
    worker.check_alive()
    scheduler.check_alive()


async def test_the_rust_worker_records_the_status_of_a_task_tracked_from_python(
    nats_server: NatsServer, start_worker: StartWorker, reports: Reports
) -> None:
    await start_worker("w1")
    producer = await within("connect", AsyncProducer.connect(config_for(nats_server)))
    try:
        tracked = await within("enqueue", producer.enqueue_detailed("work", "job", {"n": 7}, track_status=True))
        untracked = await within("enqueue", producer.enqueue("work", "job", {"n": 8}))
        done = await within("wait", producer.wait(tracked.id, RUN_WAIT), RUN_WAIT + 5)
        assert done.state is TaskState.SUCCEEDED and done.is_terminal
        assert done.sequence == tracked.sequence
        assert done.queue == "work" and done.task == "job" and done.attempt == 1
        assert done.finished_at is not None and _time(done.finished_at) >= _time(done.started_at)
        assert [t.state for t in done.transitions] == [TaskState.QUEUED, TaskState.RUNNING, TaskState.SUCCEEDED]

        async def ran() -> Optional[bool]:
            return True if any(id == untracked for _, _, _, id in reports.done) else None

        await eventually("the untracked task runs", ran)
        assert await producer.status(untracked) is None, "an untracked task has no record"
    finally:
        await producer.close()


async def test_cancelling_a_task_running_in_the_rust_worker_ends_it_cancelled(
    nats_server: NatsServer, start_worker: StartWorker, reports: Reports
) -> None:
    await start_worker("w1")
    producer = await within("connect", AsyncProducer.connect(config_for(nats_server)))
    try:
        task_id = await within("enqueue", producer.enqueue("work", "job", {"n": 3, "note": "sleep:3000"}, track_status=True))

        async def running() -> None:
            async for status in producer.watch(task_id):
                if status.state is TaskState.RUNNING:
                    return
            pytest.fail("the task finished before it was seen running")

        await within("running", running())
        outcome = await within("cancel", producer.cancel(task_id))
        assert outcome.requested, outcome
        done = await within("wait", producer.wait(task_id, RUN_WAIT), RUN_WAIT + 5)
        assert done.state is TaskState.CANCELLED, done
        assert done.cancel_requested_at is not None
        assert [n for _, n, _, _ in reports.started] == [3], "not retried"
    finally:
        await producer.close()


async def test_a_task_cancelled_before_a_worker_pulls_it_is_dropped_without_running(
    nats_server: NatsServer, start_worker: StartWorker, reports: Reports
) -> None:
    first = await start_worker("w1")  # provisions the streams; then stops
    first.stop()
    producer = await within("connect", AsyncProducer.connect(config_for(nats_server)))
    try:
        cancelled = await within("enqueue", producer.enqueue("work", "job", {"n": 1}, track_status=True))
        assert (await producer.cancel(cancelled)).cancelled
        later = await within("enqueue", producer.enqueue("work", "job", {"n": 2}, track_status=True))
        await start_worker("w2")
        done = await within("wait", producer.wait(later, RUN_WAIT), RUN_WAIT + 5)
        assert done.state is TaskState.SUCCEEDED

        async def drained() -> Optional[bool]:
            return True if await stored_tasks(nats_server.url) == [] else None

        await eventually("the cancelled task leaves the stream", drained)
        assert [n for _, n, _, _ in reports.started] == [2], "the cancelled task never ran"
        status = await producer.status(cancelled)
        assert status is not None and status.state is TaskState.CANCELLED
    finally:
        await producer.close()


async def test_a_delayed_task_cancelled_before_its_release_never_runs(
    nats_server: NatsServer, start_worker: StartWorker, scheduler: RunningBinary, reports: Reports
) -> None:
    await start_worker("w1")
    producer = await within("connect", AsyncProducer.connect(config_for(nats_server)))
    try:
        cancelled = await within("enqueue", producer.enqueue("work", "job", {"n": 1}, delay=1.0, track_status=True))
        control = await within("enqueue", producer.enqueue("work", "job", {"n": 2}, delay=1.5, track_status=True))
        assert (await producer.cancel(cancelled)).cancelled
        done = await within("control", producer.wait(control, RUN_WAIT), RUN_WAIT + 5)
        assert done.state is TaskState.SUCCEEDED

        async def gone() -> Optional[bool]:
            empty = await stored_tasks(nats_server.url) == [] and await stored_tasks(nats_server.url, "JETQ_DELAYED") == []
            return True if empty else None

        await eventually("both released and the cancelled one terminated", gone)
        assert [n for _, n, _, _ in reports.started] == [2], "the cancelled task never ran"
        status = await producer.status(cancelled)
        assert status is not None and status.state is TaskState.CANCELLED
    finally:
        await producer.close()
