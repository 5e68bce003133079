"""``jetq.control``: cancel of a running task through worker control (docs/PROTOCOL.md §16)
against docs/conformance/control.json, and against a real ``test_worker`` process: the worker
running an untracked task terminates it when asked (it leaves the task stream and is never
delivered again)."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, AsyncIterator, Dict, Optional

import nats
import pytest
from nats.aio.client import Client as NatsClient

from jetq import AsyncProducer
from jetq.control import cancel_request, cancel_running, cancel_subject, parse_cancel_reply
from jetq.testing import NatsServer, RunningBinary, stored_tasks
from jetq.workers import list_workers

from .rust import rust_binaries, worker_env
from .support import WAIT, config_for, within

VECTORS_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "..", "docs", "conformance", "control.json")

with open(VECTORS_PATH, encoding="utf-8") as handle:
    VECTORS: Dict[str, Any] = json.load(handle)


@pytest.mark.parametrize("case", VECTORS["subjects"], ids=lambda c: c["prefix"])
def test_subjects(case: Dict[str, Any]) -> None:
    assert cancel_subject(case["prefix"], case["worker_id"]) == case["subject"]


@pytest.mark.parametrize("case", VECTORS["requests"], ids=lambda c: c["name"])
def test_request_bodies(case: Dict[str, Any]) -> None:
    assert cancel_request(case["id"], case["sequence"], case["by"]).decode() == case["body"]


@pytest.mark.parametrize("case", VECTORS["replies"], ids=lambda c: c["name"])
def test_replies_a_requester_accepts(case: Dict[str, Any]) -> None:
    reply = parse_cancel_reply(case["body"].encode())
    assert reply is not None
    assert (reply.found, reply.sequence, reply.attempt, reply.error) == (
        case["found"],
        case["sequence"],
        case["attempt"],
        case["error"],
    )


@pytest.mark.parametrize("body", VECTORS["bad_replies"])
def test_bad_replies_are_no_answer(body: str) -> None:
    assert parse_cancel_reply(body.encode()) is None


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
async def test_a_rust_worker_cancels_the_untracked_task_it_runs(nats_server: NatsServer, client: NatsClient) -> None:
    binaries = rust_binaries()
    env = worker_env(nats_server.url, "py")
    env["JETQ_PRESENCE_INTERVAL"] = "300ms"
    worker = RunningBinary(binaries["test_worker"], env)
    try:
        started = await client.subscribe("test.started")
        producer = await within("producer", AsyncProducer.connect(config_for(nats_server)))
        try:

            async def enqueue() -> Optional[str]:
                try:
                    return await producer.enqueue("work", "job", {"n": 1, "note": "sleep:60000"})
                except Exception:
                    return None

            task_id = await eventually("enqueue once the worker provisioned", enqueue)
        finally:
            await producer.close()
        line = await within("the task starts", started.next_msg(timeout=WAIT))
        assert line.data.decode().endswith(task_id)

        # Nothing runs a task with another id.
        assert await cancel_running(client, "no-such-task", queue="work") is None

        reply = await within("the worker answers", cancel_running(client, task_id))
        assert reply is not None and reply.found
        assert reply.attempt == 1 and reply.sequence > 0
        records = await list_workers(client)
        assert reply.worker in [r.id for r in records]

        # Terminated before the reply: gone from the task stream at once.
        assert [t for t in await stored_tasks(nats_server.url, "JETQ_TASKS") if t.headers.get("Nats-Msg-Id") == task_id] == []
        # Nothing left to deliver or to wait for an ack: it is never run again.
        js = client.jetstream()
        info = await js.consumer_info("JETQ_TASKS", "worker-work")
        assert info.num_ack_pending == 0 and info.num_pending == 0
    finally:
        worker.stop()
