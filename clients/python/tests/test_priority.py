"""Priorities within a queue (docs/PROTOCOL.md §12) through every enqueue entry point, against
a real nats-server: ``high`` and ``low`` tasks land on their level's subject
(``jetq.task.emails~high.<task>``) with ``Jetq-Priority``, ``normal`` ones where they always
did, and a level that does not exist is refused before anything is sent. The exact subjects
and headers are pinned by docs/conformance/priorities.json (tests/test_conformance.py)."""

from __future__ import annotations

import asyncio
import re
from typing import Dict, List, Optional

import pytest

import jetq
from jetq import AsyncProducer, Priority, Producer, TaskRequest, Unique
from jetq.testing import NatsServer, StoredTask, create_task_stream, stored_tasks

from .support import config_for, within

REASON = 'unknown priority "urgent": the levels are "high", "normal" and "low"'


def by_id(tasks: List[StoredTask]) -> Dict[str, StoredTask]:
    return {t.headers["Nats-Msg-Id"]: t for t in tasks}


def level_of(task: StoredTask) -> Optional[str]:
    return task.headers.get("Jetq-Priority")


async def test_async_entry_points_put_high_and_low_tasks_on_their_level_subjects(
    producer: AsyncProducer, nats_server: NatsServer
) -> None:
    high = await within("enqueue high", producer.enqueue("emails", "send", {"n": 1}, priority="high"))
    low = await within("enqueue low", producer.enqueue_detailed("emails", "send", {"n": 2}, priority=Priority.LOW))
    normal = await within("enqueue normal", producer.enqueue("emails", "send", {"n": 3}, priority="normal"))
    plain = await within("enqueue plain", producer.enqueue("emails", "send", {"n": 4}))
    batch = await within(
        "enqueue_many",
        producer.enqueue_many(
            [
                TaskRequest("emails", "send", {"n": 5}, priority=Priority.HIGH),
                TaskRequest("emails", "send", {"n": 6}, priority="low"),
                TaskRequest("emails", "send", {"n": 7}, priority="urgent"),
                ("emails", "send", {"n": 8}),
            ]
        ),
    )
    assert isinstance(batch[2], jetq.InvalidPriority) and str(batch[2]) == REASON
    many = [r for r in batch if isinstance(r, jetq.Enqueued)]
    assert len(many) == 3
    assert low.stream == "JETQ_TASKS"

    stored = by_id(await stored_tasks(nats_server.url))
    assert len(stored) == 7, "the refused task was not sent"
    expected = {
        high: ("jetq.task.emails~high.send", "high"),
        low.id: ("jetq.task.emails~low.send", "low"),
        normal: ("jetq.task.emails.send", None),
        plain: ("jetq.task.emails.send", None),
        many[0].id: ("jetq.task.emails~high.send", "high"),
        many[1].id: ("jetq.task.emails~low.send", "low"),
        many[2].id: ("jetq.task.emails.send", None),
    }
    assert {i: (t.subject, level_of(t)) for i, t in stored.items()} == expected


async def test_a_delayed_task_waits_on_its_level_subject(producer: AsyncProducer, nats_server: NatsServer) -> None:
    result = await within("enqueue delayed", producer.enqueue_detailed("emails", "send", {}, delay=60, priority="high"))
    assert result.stream == "JETQ_DELAYED"
    [stored] = await stored_tasks(nats_server.url, "JETQ_DELAYED")
    assert re.fullmatch(r"jetq\.delayed\.[0-9]+\.emails~high\.send", stored.subject), stored.subject
    assert level_of(stored) == "high"


async def test_a_debounced_task_keeps_its_level(producer: AsyncProducer, nats_server: NatsServer) -> None:
    unique = Unique(key="digest:7", scope="debounce", period=60)
    result = await within("enqueue", producer.enqueue_detailed("emails", "digest", {}, unique=unique, priority="low"))
    assert result.stream == "JETQ_DELAYED"
    [stored] = await stored_tasks(nats_server.url, "JETQ_DELAYED")
    assert re.fullmatch(r"jetq\.delayed\.[0-9]+\.emails~low\.digest", stored.subject), stored.subject
    assert level_of(stored) == "low"


async def test_an_unknown_priority_is_refused_before_sending(producer: AsyncProducer, nats_server: NatsServer) -> None:
    for bad in ("urgent", "HIGH", "", 1):
        with pytest.raises(jetq.InvalidPriority) as caught:
            await producer.enqueue("emails", "send", {}, priority=bad)  # type: ignore[arg-type]
        assert isinstance(caught.value, jetq.InvalidOption) and caught.value.option == "priority"
    assert str(caught.value) == 'unknown priority 1: the levels are "high", "normal" and "low"'
    assert await stored_tasks(nats_server.url) == []


async def test_the_blocking_producer_puts_tasks_on_their_level_subjects(nats_server: NatsServer) -> None:
    await within("task stream", create_task_stream(nats_server.url))

    def enqueue() -> List[str]:
        with Producer(config_for(nats_server)) as producer:
            ids = [
                producer.enqueue("reports", "build", {}, priority="high"),
                producer.enqueue_detailed("reports", "build", {}, priority=Priority.LOW).id,
            ]
            [many] = producer.enqueue_many([TaskRequest("reports", "build", {}, priority="high")])
            assert isinstance(many, jetq.Enqueued)
            with pytest.raises(jetq.InvalidPriority, match=re.escape(REASON)):
                producer.enqueue("reports", "build", {}, priority="urgent")
            return ids + [many.id]

    ids = await within("blocking producer", asyncio.to_thread(enqueue))
    stored = by_id(await stored_tasks(nats_server.url))
    assert [(stored[i].subject, level_of(stored[i])) for i in ids] == [
        ("jetq.task.reports~high.build", "high"),
        ("jetq.task.reports~low.build", "low"),
        ("jetq.task.reports~high.build", "high"),
    ]
