"""The transactional outbox writer (jetq.outbox) on a real PostgreSQL (a cluster of the test's
own, see conftest.py) through psycopg 3: a row per committed task, none for a rolled-back one,
bad input refused before any statement runs, and the row holding exactly the message the
producer publishes for the same task."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Dict, Iterator, List, Tuple

import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from jetq import AsyncProducer, ConfigError, DelayTooLong, InvalidKey, InvalidName, InvalidOption, SerializeError
from jetq.errors import EnqueueError, OutboxMissing
from jetq.outbox import Outbox
from jetq.outbox_schema import schema_statements
from jetq.protocol import parse_timestamp
from jetq.testing import NatsServer, stored_tasks
from jetq.testing_postgres import PostgresServer

from .support import WAIT, config_for, within

Row = Tuple[str, str, Dict[str, str], bytes]


@pytest.fixture
def tracer() -> Iterator[Tracer]:
    provider = TracerProvider()
    yield provider.get_tracer("jetq-outbox-tests")
    provider.shutdown()


def rows(dsn: str, table: str = "jetq_outbox") -> List[Row]:
    """Every row of the outbox table, seen from another connection (so only committed ones)."""
    with psycopg.connect(dsn) as conn:
        found = conn.execute(f"SELECT msg_id, subject, headers, payload FROM {table} ORDER BY id").fetchall()
    return [(msg_id, subject, headers, bytes(payload)) for msg_id, subject, headers, payload in found]


async def test_a_committed_row_is_the_message_the_producer_publishes(
    outbox_dsn: str, producer: AsyncProducer, nats_server: NatsServer, tracer: Tracer
) -> None:
    """The same task through the producer (stored by JetStream) and through the outbox (a row):
    same subject, headers and payload bytes; only Jetq-Enqueued-At is each one's own time."""
    outbox = Outbox(producer.config)
    due = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)).replace(microsecond=123456)
    tasks: List[Tuple[str, str, Any, Dict[str, Any]]] = [
        ("emails", "send_email", {"to": "ada@example.com", "name": "Adà"}, {"key": "welcome-1", "max_attempts": 3, "timeout": 1.5}),
        ("exports", "generate_csv", [1, 2.5, None], {"key": "export-7", "track_status": True}),
        ("emails", "send_reminder", {"n": 1}, {"key": "reminder-1", "at": due}),
    ]
    before = dt.datetime.now(dt.timezone.utc)
    with tracer.start_as_current_span("signup"):
        with psycopg.connect(outbox_dsn) as conn:
            ids = [outbox.enqueue(conn, queue, task, args, **options) for queue, task, args, options in tasks]
        for queue, task, args, options in tasks:
            await within("enqueue", producer.enqueue(queue, task, args, **options))
    after = dt.datetime.now(dt.timezone.utc)
    assert ids == ["welcome-1", "export-7", "reminder-1"]

    written = rows(outbox_dsn)
    published = await within("read", stored_tasks(nats_server.url)) + await within(
        "read delayed", stored_tasks(nats_server.url, stream="JETQ_DELAYED")
    )
    assert len(written) == len(published) == 3
    for (msg_id, subject, headers, payload), stored in zip(written, published):
        assert subject == stored.subject
        assert payload == stored.payload
        assert msg_id == stored.headers["Nats-Msg-Id"], "the relay publishes msg_id as Nats-Msg-Id"
        enqueued_at = parse_timestamp(headers["Jetq-Enqueued-At"])
        assert enqueued_at is not None and before <= enqueued_at <= after
        assert {k: v for k, v in headers.items() if k != "Jetq-Enqueued-At"} == {
            k: v for k, v in stored.headers.items() if k not in ("Jetq-Enqueued-At", "Nats-Msg-Id")
        }
        assert headers["traceparent"].startswith("00-"), "the span of the request that wrote the row"
    assert written[0][2]["Jetq-Max-Attempts"] == "3" and written[0][2]["Jetq-Timeout-Ms"] == "1500"
    assert written[1][2]["Jetq-Track-Status"] == "1"
    assert written[2][1] == f"jetq.delayed.{int(due.timestamp())}.emails.send_reminder"
    assert written[2][2]["Jetq-Not-Before"] == due.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert json.loads(written[0][3]) == {"to": "ada@example.com", "name": "Adà"}


def test_a_rolled_back_transaction_writes_no_row(outbox_dsn: str) -> None:
    outbox = Outbox()
    with psycopg.connect(outbox_dsn) as conn:
        outbox.enqueue(conn, "emails", "send_email", {"to": "a@example.com"})
        seen_inside = conn.execute("SELECT count(*) FROM jetq_outbox").fetchone()
        conn.rollback()
        with pytest.raises(RuntimeError):
            with conn.transaction():
                outbox.enqueue(conn, "emails", "send_email", {"to": "b@example.com"})
                raise RuntimeError("the view failed after the enqueue")
    assert seen_inside == (1,), "the row was written in the transaction"
    assert rows(outbox_dsn) == []


def test_a_committed_transaction_writes_exactly_one_row_per_task(outbox_dsn: str) -> None:
    outbox = Outbox()
    with psycopg.connect(outbox_dsn) as conn:
        conn.execute("CREATE TABLE members (email TEXT)")
        conn.execute("INSERT INTO members VALUES ('a@example.com')")
        task_id = outbox.enqueue(conn, "emails", "send_email", {"to": "a@example.com"})
        assert rows(outbox_dsn) == [], "invisible before the commit"
    [(msg_id, subject, headers, payload)] = rows(outbox_dsn)
    assert msg_id == task_id and len(task_id) == 26, "a generated ULID"
    assert subject == "jetq.task.emails.send_email"
    assert set(headers) == {"Jetq-Enqueued-At"}, "Nats-Msg-Id is the msg_id column"
    assert payload == b'{"to":"a@example.com"}'


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda o, c: o.enqueue(c, "emails.x", "send"), InvalidName),
        (lambda o, c: o.enqueue(c, "emails", ""), InvalidName),
        (lambda o, c: o.enqueue(c, "emails", "send", {}, key="has space"), InvalidKey),
        (lambda o, c: o.enqueue(c, "emails", "send", {"when": dt.datetime.now()}), SerializeError),
        (lambda o, c: o.enqueue(c, "emails", "send", float("nan")), SerializeError),
        (lambda o, c: o.enqueue(c, "emails", "send", {}, delay=dt.timedelta(days=31)), DelayTooLong),
        (lambda o, c: o.enqueue(c, "emails", "send", {}, at=dt.datetime(2030, 1, 1)), InvalidOption),
        (lambda o, c: o.enqueue(c, "emails", "send", {}, max_attempts=0), InvalidOption),
        (lambda o, c: o.enqueue(c, "emails", "send", {}, timeout=-1), InvalidOption),
    ],
)
def test_bad_input_fails_before_any_statement_runs(outbox_dsn: str, call: Any, error: type) -> None:
    with psycopg.connect(outbox_dsn) as conn:
        with pytest.raises(error) as raised:
            call(Outbox(), conn)
        assert isinstance(raised.value, EnqueueError)
        # Not even BEGIN was sent: the caller's transaction is untouched and usable.
        assert conn.info.transaction_status is psycopg.pq.TransactionStatus.IDLE
        conn.execute("SELECT 1")
    assert rows(outbox_dsn) == []


def test_a_missing_table_is_a_clear_error(postgres: PostgresServer) -> None:
    database = postgres.create_database("outbox_missing")
    with psycopg.connect(postgres.dsn(database)) as conn:
        with pytest.raises(OutboxMissing) as raised:
            Outbox().enqueue(conn, "emails", "send_email", {})
        conn.rollback()
    assert raised.value.table == "jetq_outbox"
    assert "run its migration" in str(raised.value) and "jetq_outbox" in str(raised.value)


def test_an_invalid_table_name_is_refused_at_construction() -> None:
    for bad in ["Outbox", "outbox; DROP TABLE users", "1outbox", "", "a" * 64]:
        with pytest.raises(ConfigError):
            Outbox(table=bad)


def test_relays_are_woken_by_the_commit_only(outbox_dsn: str) -> None:
    """The trigger of the canonical schema: NOTIFY on the table's channel, delivered when the
    inserting transaction commits (never for a rollback)."""
    outbox = Outbox()
    with psycopg.connect(outbox_dsn, autocommit=True) as listener:
        listener.execute("LISTEN jetq_outbox")
        with psycopg.connect(outbox_dsn) as conn:
            outbox.enqueue(conn, "emails", "send_email", {})
            conn.rollback()
            outbox.enqueue(conn, "emails", "send_email", {})
            assert list(listener.notifies(timeout=0.5, stop_after=1)) == [], "nothing before the commit"
            conn.commit()
        [notify] = list(listener.notifies(timeout=WAIT, stop_after=1))
        assert notify.channel == "jetq_outbox"
        assert list(listener.notifies(timeout=0.5, stop_after=1)) == [], "and none for the rollback"
    assert len(rows(outbox_dsn)) == 1


def test_a_cursor_and_another_table_name_work_too(postgres: PostgresServer, nats_server: NatsServer) -> None:
    database = postgres.create_database("outbox_custom")
    dsn = postgres.dsn(database)
    with psycopg.connect(dsn) as conn:
        for statement in schema_statements("shop_outbox"):
            conn.execute(statement)
    outbox = Outbox(config_for(nats_server, prefix="shop"), table="shop_outbox")
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN shop_outbox")
        with psycopg.connect(dsn) as conn, conn.cursor() as cursor:
            task_id = outbox.enqueue(cursor, "emails", "send_email", [1], key="k-1")
        [notify] = list(listener.notifies(timeout=WAIT, stop_after=1))
        assert notify.channel == "shop_outbox"
    assert rows(dsn, "shop_outbox") == [
        (task_id, "shop.task.emails.send_email", rows(dsn, "shop_outbox")[0][2], b"[1]")
    ]
    with pytest.raises(TypeError):
        outbox.write(object(), outbox.prepare("emails", "send_email"))


def test_psycopg2_connections_and_cursors_work_too(outbox_dsn: str, postgres: PostgresServer) -> None:
    """The same writer on psycopg2 (Django's other PostgreSQL driver): a committed row with the
    same columns, none after a rollback, OutboxMissing through its pgcode."""
    import psycopg2  # pinned in .tools/venv by scripts/ensure-nats-server.sh
    outbox = Outbox()
    conn = psycopg2.connect(outbox_dsn)
    try:
        task_id = outbox.enqueue(conn, "emails", "send_email", {"to": "ada@example.com", "name": "Adà"}, key="p2-1")
        conn.rollback()
        with conn.cursor() as cursor:
            outbox.enqueue(cursor, "emails", "send_email", {"to": "ada@example.com", "name": "Adà"}, key="p2-2", delay=60)
        conn.commit()
    finally:
        conn.close()
    [(msg_id, subject, headers, payload)] = rows(outbox_dsn)
    assert task_id == "p2-1" and msg_id == "p2-2"
    assert subject.startswith("jetq.delayed.") and subject.endswith(".emails.send_email")
    assert set(headers) == {"Jetq-Enqueued-At", "Jetq-Not-Before"}
    assert payload == '{"to":"ada@example.com","name":"Adà"}'.encode()
    empty = psycopg2.connect(postgres.dsn(postgres.create_database("outbox_missing_psycopg2")))
    try:
        with pytest.raises(OutboxMissing):
            outbox.enqueue(empty, "emails", "send_email", {})
    finally:
        empty.close()
