"""Rows written by the Python outbox writer, published by the real Rust ``jetq-relay``
(``$JETQ_TEST_RELAY_BIN``, which scripts/test.sh builds; else built with cargo): JetStream ends up
with exactly the messages the Python producer publishes for the same tasks, and the table empty."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, Dict, Iterator, List, Tuple

import nats.js.errors
import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider

from jetq import AsyncProducer
from jetq.outbox import Outbox
from jetq.testing import NatsServer, RunningBinary, StoredTask, cargo_binary, create_task_stream, free_port, stored_tasks
from jetq.testing_postgres import PostgresServer

from .rust import REPO
from .support import WAIT, within

pytestmark = pytest.mark.rust


@pytest.fixture(scope="session")
def relay_binary() -> str:
    try:
        return cargo_binary("jetq-outbox", "jetq-relay", REPO, "JETQ_TEST_RELAY_BIN")
    except RuntimeError as err:
        pytest.fail(f"{err}\n(this test runs the outbox relay; deselect it with -m 'not rust')")


@pytest.fixture
def relay(relay_binary: str, nats_server: NatsServer, task_stream: str, outbox_dsn: str, postgres: PostgresServer) -> Iterator[RunningBinary]:
    database = dict(part.split("=", 1) for part in outbox_dsn.split())["dbname"]
    port = free_port()
    env = {
        "JETQ_NATS_URL": nats_server.url,
        "JETQ_DATABASE_URL": postgres.url_for(database),
        "JETQ_HEALTH_LISTEN": f"127.0.0.1:{port}",
    }
    with RunningBinary(relay_binary, env, ready_url=f"http://127.0.0.1:{port}/readyz") as running:
        yield running


async def all_stored(url: str) -> List[StoredTask]:
    """The task stream's and the delayed-task stream's messages."""
    tasks = await stored_tasks(url)
    try:
        delayed = await stored_tasks(url, stream="JETQ_DELAYED")
    except nats.js.errors.NotFoundError:  # no delayed stream (yet)
        delayed = []
    return tasks + delayed


async def test_python_rows_are_relayed_as_the_python_producer_publishes_them(
    relay: RunningBinary, producer: AsyncProducer, nats_server: NatsServer, outbox_dsn: str
) -> None:
    due = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).replace(microsecond=0)
    tasks: List[Tuple[str, str, Any, Dict[str, Any]]] = [
        ("emails", "send_email", {"to": "ada@example.com", "name": "Adà"}, {"key": "relayed-1", "max_attempts": 2}),
        ("reports", "build", [1, 2, 3], {"key": "relayed-2", "track_status": True, "timeout": 30}),
        ("emails", "reminder", {"n": 7}, {"key": "relayed-3", "at": due}),
        # Priorities (PROTOCOL §12): the row's subject carries the level, the relay keeps it.
        ("emails", "send_email", {"to": "bo@example.com"}, {"key": "relayed-4", "priority": "high"}),
        ("emails", "reminder", {"n": 8}, {"key": "relayed-5", "at": due, "priority": "low"}),
    ]
    outbox = Outbox(producer.config)
    with TracerProvider().get_tracer("relay-test").start_as_current_span("request"):
        with psycopg.connect(outbox_dsn) as conn:
            for queue, task, args, options in tasks:
                outbox.enqueue(conn, queue, task, args, **options)

    async def relayed() -> List[StoredTask]:
        while True:
            stored = await all_stored(nats_server.url)
            if len(stored) >= len(tasks):
                return stored
            relay.check_alive()
            await asyncio.sleep(0.05)

    from_relay = sorted(await within("the relay to publish every row", relayed()), key=lambda t: t.headers["Nats-Msg-Id"])
    with psycopg.connect(outbox_dsn) as conn:
        for _ in range(int(WAIT / 0.05)):
            if conn.execute("SELECT count(*) FROM jetq_outbox").fetchone() == (0,):
                break
            conn.rollback()
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the relay did not delete the published rows")

    # The same tasks through the producer, on a second server (the first holds the relayed ones).
    with NatsServer() as other:
        await within("task stream", create_task_stream(other.url))
        direct = await within("connect", AsyncProducer.connect(producer.config.replace(nats_url=other.url)))
        try:
            with TracerProvider().get_tracer("relay-test").start_as_current_span("request"):
                for queue, task, args, options in tasks:
                    await within("enqueue", direct.enqueue(queue, task, args, **options))
        finally:
            await direct.close()
        from_producer = sorted(await within("read", all_stored(other.url)), key=lambda t: t.headers["Nats-Msg-Id"])

    assert len(from_relay) == len(from_producer) == len(tasks)
    levels = {t.headers["Nats-Msg-Id"]: (t.subject, t.headers.get("Jetq-Priority")) for t in from_relay}
    assert levels["relayed-4"] == ("jetq.task.emails~high.send_email", "high")
    assert levels["relayed-5"][0].endswith(".emails~low.reminder") and levels["relayed-5"][1] == "low"
    varying = {"Jetq-Enqueued-At", "traceparent"}  # each enqueue's own time and span
    for relayed_task, produced in zip(from_relay, from_producer):
        assert relayed_task.subject == produced.subject
        assert relayed_task.payload == produced.payload
        assert {k: v for k, v in relayed_task.headers.items() if k not in varying} == {
            k: v for k, v in produced.headers.items() if k not in varying
        }
        assert set(relayed_task.headers) == set(produced.headers)
    relay.check_alive()
