"""``jetq.workers``: worker presence and schedule control (docs/PROTOCOL.md §14 and §7) against
docs/conformance/workers.json, a real ``test_worker`` process (its record appears with the task
it runs and goes away when it stops) and a real ``jetq-scheduler`` (pause and run now)."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from typing import Any, AsyncIterator, Dict, Optional

import nats
import pytest
from nats.aio.client import Client as NatsClient

from jetq import AsyncProducer
from jetq.protocol import Subjects
from jetq.testing import NatsServer, RunningBinary, free_port, stored_tasks
from jetq.workers import (
    MAX_RUNNING,
    control_key,
    list_workers,
    parse_worker,
    pause_schedule,
    resume_schedule,
    run_id,
    run_key,
    run_schedule,
    running_members,
    worker_id,
    workers_bucket,
)

from .rust import rust_binaries, worker_env
from .support import WAIT, config_for, within

VECTORS_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "..", "docs", "conformance", "workers.json")

with open(VECTORS_PATH, encoding="utf-8") as handle:
    VECTORS: Dict[str, Any] = json.load(handle)


@pytest.mark.parametrize("case", VECTORS["buckets"], ids=lambda c: c["prefix"])
def test_bucket_names(case: Dict[str, Any]) -> None:
    assert workers_bucket(Subjects(case["prefix"])) == case["bucket"]


@pytest.mark.parametrize("case", VECTORS["worker_ids"], ids=lambda c: c["id"])
def test_worker_ids(case: Dict[str, Any]) -> None:
    assert worker_id(case["host"], case["pid"], case["ulid"]) == case["id"]


@pytest.mark.parametrize("case", VECTORS["records"], ids=lambda c: c["name"])
def test_records_a_reader_accepts(case: Dict[str, Any]) -> None:
    record = parse_worker(json.dumps(case["value"]).encode())
    assert record is not None
    assert record.running_count == case["running_count"]
    assert len(record.running) == case["listed"]
    assert record.id == case["value"]["id"]


def test_running_batch_members_as_batch_status_counts_them() -> None:
    case = VECTORS["batch_running"]
    records = [parse_worker(json.dumps(value).encode()) for value in case["records"]]
    assert all(record is not None for record in records)
    found = running_members([r for r in records if r is not None], case["batch"], case["finished"])
    assert [{"member": member, "worker": record.id} for member, (record, _) in sorted(found.items())] == case["running"]
    listed = parse_worker(json.dumps(VECTORS["records"][-1]["value"]).encode())
    assert listed is not None and [t.batch for t in listed.running] == ["export-42", None]


def test_schedule_control_keys() -> None:
    control = VECTORS["schedule_control"]
    assert control_key(control["pause"]["schedule"]) == control["pause"]["key"]
    run = control["run"]
    assert run_key(run["schedule"], run["request"]) == run["key"]
    assert run_id(run["schedule"], run["request"]) == run["msg_id"]
    assert VECTORS["max_running"] == MAX_RUNNING
    assert parse_worker(b"not json") is None


async def eventually(what: str, check: Any, limit: float = WAIT) -> Any:
    async def poll() -> Any:
        while True:
            value = await check()
            if value is not None:
                return value
            await asyncio.sleep(0.05)

    return await within(what, poll(), limit)


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[NatsClient]:
    nc = await within("connect", nats.connect(nats_server.url, allow_reconnect=False))
    try:
        yield nc
    finally:
        await nc.close()


@pytest.mark.rust
async def test_a_rust_worker_is_listed_with_its_running_task_and_gone_after_it_stops(
    nats_server: NatsServer, client: NatsClient
) -> None:
    binaries = rust_binaries()
    env = worker_env(nats_server.url, "py")
    env["JETQ_PRESENCE_INTERVAL"] = "300ms"
    env["HOSTNAME"] = "py-host"
    worker = RunningBinary(binaries["test_worker"], env)
    try:
        producer = await within("producer", AsyncProducer.connect(config_for(nats_server)))
        try:
            # The worker provisions the task stream; enqueue once it exists.
            task_id = await eventually(
                "enqueue once the worker provisioned",
                lambda: _try_enqueue(producer),
            )
        finally:
            await producer.close()

        async def listed() -> Optional[Any]:
            for record in await list_workers(client):
                if any(task.id == task_id for task in record.running):
                    return record
            return None

        record = await eventually("the worker lists the task", listed)
        assert record.host == "py-host"
        assert record.queues == ["work"]
        assert record.concurrency == 2
        assert record.running_count == 1
        assert record.running[0].task == "job" and record.running[0].attempt == 1
    finally:
        worker.stop()

    async def gone() -> Optional[bool]:
        return True if await list_workers(client) == [] else None

    await eventually("the stopped worker's record is gone", gone)


async def _try_enqueue(producer: AsyncProducer) -> Optional[str]:
    try:
        return await producer.enqueue("work", "job", {"n": 1, "note": "sleep:3000"})
    except Exception:
        return None


@pytest.mark.rust
async def test_pause_and_run_a_schedule_of_the_rust_scheduler(nats_server: NatsServer, client: NatsClient) -> None:
    binaries = rust_binaries()
    directory = tempfile.mkdtemp(prefix="jetq-schedules-")
    path = os.path.join(directory, "schedules.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        # Yearly: it never fires during the test unless asked.
        handle.write('schedules:\n  - name: report\n    cron: "0 0 0 1 1 *"\n    queue: work\n    task: job\n    args: {"n": 5}\n')
    port = free_port()
    scheduler = RunningBinary(
        binaries["jetq-scheduler"],
        {
            "JETQ_NATS_URL": nats_server.url,
            "JETQ_SCHEDULES_FILE": path,
            "JETQ_HEALTH_LISTEN": f"127.0.0.1:{port}",
        },
        ready_url=f"http://127.0.0.1:{port}/readyz",
    )
    try:
        control = await within("pause", pause_schedule(client, "report", by="py"))
        assert control["paused"] is True
        kv = await client.jetstream().key_value("JETQ_SCHEDULER")
        stored = json.loads((await kv.get("control.report")).value or b"{}")
        assert stored["paused"] is True and stored["by"] == "py"
        control = await within("resume", resume_schedule(client, "report", by="py"))
        assert control["paused"] is False

        task_id = await within("run", run_schedule(client, "report", by="py"))
        assert task_id.startswith("report:run:")

        async def published() -> Optional[Any]:
            try:
                tasks = await stored_tasks(nats_server.url)
            except Exception:
                return None
            found = [t for t in tasks if t.headers.get("Nats-Msg-Id") == task_id]
            return found or None

        found = await eventually("the run-now task", published)
        assert len(found) == 1
        assert json.loads(found[0].payload) == {"n": 5}
        assert found[0].headers.get("Jetq-Schedule") == "report"
    finally:
        scheduler.stop()
