"""Transactional enqueue: a task written into the application's own database transaction.

A task enqueued with :meth:`Outbox.enqueue` is one row of the outbox table (docs/PROTOCOL.md
§10), inserted on the database connection the caller passes, inside whatever transaction that
connection is in: it commits with the caller's writes or rolls back with them. The relay
(``jetq-relay``) publishes committed rows to JetStream with ``Nats-Msg-Id`` = the row's
``msg_id`` and deletes them once acknowledged: at least once, and a row published twice (a relay
crash between the ack and the delete) is dropped as a duplicate.

The row holds the very message :class:`~jetq.Producer` would publish: both are built by
:func:`jetq.message.build_task_message` (same validation, id, ``Jetq-Enqueued-At`` = when the
row is written, the current OpenTelemetry span's ``traceparent``, delays as §7 publishes them).

Works with any PostgreSQL DB-API driver using the ``%s`` parameter style — psycopg 3, psycopg2
— and so with any framework that hands out their connections (SQLAlchemy's
``session.connection().connection``, Django's ``connection.cursor()``: see :mod:`jetq.django`)::

    import psycopg
    from jetq.outbox import Outbox

    outbox = Outbox.from_env()  # JETQ_PREFIX, JETQ_MAX_DELAY
    with psycopg.connect(dsn) as conn:  # one transaction, committed at the end of the block
        conn.execute("INSERT INTO members (email) VALUES (%s)", ["ada@example.com"])
        task_id = outbox.enqueue(conn, "emails", "send_email", {"to": "ada@example.com"})

What the outbox does not do that :class:`~jetq.Producer` does, since it does not talk to NATS:
it does not read the task-type catalog (pass ``track_status=True`` for a tracked task), and it
cannot check the message against the server's size limit (the relay dead-letters a message the
server refuses as too large, with the reason).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from typing import Any, Dict, Optional, Tuple

from .config import Config
from .errors import OutboxMissing
from .message import build_task_message
from .outbox_schema import DEFAULT_TABLE, validate_table
from .priority import PriorityLike
from .protocol import MSG_ID, Prepared, Seconds, Subjects

__all__ = ["Outbox", "OutboxRow", "row_of", "insert_sql"]

#: PostgreSQL's SQLSTATE for "relation does not exist".
UNDEFINED_TABLE = "42P01"


@dataclasses.dataclass(frozen=True)
class OutboxRow:
    """The values of one outbox row's columns written by a producer (the others have defaults)."""

    #: The task id (the idempotency key, or a generated ULID): the relay's ``Nats-Msg-Id``.
    msg_id: str
    #: Where the relay publishes it: ``<prefix>.task.<queue>.<task>``, or
    #: ``<prefix>.delayed.<due>.<queue>.<task>`` for a delayed task.
    subject: str
    #: The message's headers but ``Nats-Msg-Id`` (that is :attr:`msg_id`).
    headers: Dict[str, str]
    #: The task's arguments: the JSON bytes exactly as published.
    payload: bytes

    def params(self) -> Tuple[str, str, str, bytes]:
        """The parameters of :func:`insert_sql`, ``headers`` as a JSON object text."""
        headers = json.dumps(self.headers, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
        return self.msg_id, self.subject, headers, self.payload


def row_of(message: Prepared) -> OutboxRow:
    """The outbox row of a task message: its headers but ``Nats-Msg-Id``, which is the
    ``msg_id`` column (docs/PROTOCOL.md §10; the relay publishes it from there)."""
    headers = {name: value for name, value in message.headers.items() if name != MSG_ID}
    return OutboxRow(message.id, message.subject, headers, message.payload)


def insert_sql(table: str = DEFAULT_TABLE) -> str:
    """The INSERT of one row, with ``%s`` placeholders for :meth:`OutboxRow.params`.

    >>> insert_sql()
    'INSERT INTO jetq_outbox (msg_id, subject, headers, payload) VALUES (%s, %s, %s::jsonb, %s)'
    """
    return f"INSERT INTO {validate_table(table)} (msg_id, subject, headers, payload) VALUES (%s, %s, %s::jsonb, %s)"


class Outbox:
    """Writes tasks into the outbox table on the caller's database connection or cursor.

    Holds no connection and no state but its settings: create one per process (or per call,
    it is cheap) and share it between threads.
    """

    def __init__(self, config: Optional[Config] = None, *, table: str = DEFAULT_TABLE) -> None:
        """:param config: the subject prefix and the maximum delay come from it (the other
            settings are the producer's and the relay's)
        :param table: the outbox table, ``[a-z_][a-z0-9_]{0,62}`` (the relay's
            ``JETQ_OUTBOX_TABLE`` must name the same)
        :raises ConfigError: an invalid table name or configuration
        """
        self._config = config if config is not None else Config()
        self._config.validate()
        self._subjects = Subjects(self._config.prefix)
        self._table = validate_table(table)
        self._insert = insert_sql(self._table)

    @classmethod
    def from_env(cls, environ: Optional[Dict[str, str]] = None, *, table: str = DEFAULT_TABLE) -> "Outbox":
        """An outbox with the ``JETQ_*`` settings of the environment (``JETQ_PREFIX``,
        ``JETQ_MAX_DELAY``), as :meth:`jetq.Producer.from_env` reads them."""
        return cls(Config.from_env(environ), table=table)

    @property
    def table(self) -> str:
        """The outbox table written to."""
        return self._table

    @property
    def config(self) -> Config:
        """The configuration in use."""
        return self._config

    def prepare(
        self,
        queue: str,
        task: str,
        args: Any = None,
        *,
        key: Optional[str] = None,
        delay: Optional[Seconds] = None,
        at: Optional[_dt.datetime] = None,
        max_attempts: Optional[int] = None,
        timeout: Optional[Seconds] = None,
        traceparent: Optional[str] = None,
        tracestate: Optional[str] = None,
        track_status: bool = False,
        priority: Optional[PriorityLike] = None,
    ) -> Prepared:
        """Validates a task and builds its message, as :meth:`jetq.Producer.enqueue` would
        publish it (see :func:`jetq.message.build_task_message`)."""
        return build_task_message(
            self._subjects,
            queue,
            task,
            args,
            key=key,
            delay=delay,
            at=at,
            max_attempts=max_attempts,
            timeout=timeout,
            traceparent=traceparent,
            tracestate=tracestate,
            track_status=track_status,
            priority=priority,
            max_delay=self._config.max_delay_timedelta,
        )

    def enqueue(
        self,
        db: Any,
        queue: str,
        task: str,
        args: Any = None,
        *,
        key: Optional[str] = None,
        delay: Optional[Seconds] = None,
        at: Optional[_dt.datetime] = None,
        max_attempts: Optional[int] = None,
        timeout: Optional[Seconds] = None,
        traceparent: Optional[str] = None,
        tracestate: Optional[str] = None,
        track_status: bool = False,
        priority: Optional[PriorityLike] = None,
    ) -> str:
        """Writes one task into the outbox table in ``db``'s current transaction and returns
        its id. Nothing is published here: the task is relayed once (and only if) the
        transaction commits.

        :param db: a DB-API connection (its ``cursor()`` is used and closed) or cursor, of
            PostgreSQL through psycopg 3 or psycopg2. The row belongs to the transaction the
            connection is in: with autocommit on and no transaction open, it commits at once
        :param queue: queue name, ``[A-Za-z0-9_-]{1,64}``
        :param task: task name, same rule
        :param args: the task's arguments, any JSON-serializable value
        :param key: idempotency key: the task id and ``Nats-Msg-Id``. Also what makes a
            second relay of the same row harmless, so give one when the task must not run
            twice even past the duplicate window
        :param delay: run it no earlier than this long after the row is written (seconds or
            ``timedelta``); the relay publishes it to the delayed-task stream
        :param at: run it no earlier than this aware ``datetime``; give ``delay`` or ``at``
        :param max_attempts: overrides the task type's maximum attempts (>= 1)
        :param timeout: overrides the per-attempt timeout (seconds or ``timedelta``)
        :param traceparent: explicit W3C trace context; by default the current
            OpenTelemetry span's, so the worker continues the trace of the request
        :param tracestate: W3C trace state, sent with ``traceparent``
        :param track_status: track this task's status (``Jetq-Track-Status: 1``)
        :param priority: the task's level within its queue, ``"high"``, ``"normal"`` (the
            default) or ``"low"`` (or a :class:`jetq.Priority`): the row's subject is the
            level's (``<prefix>.task.<queue>~high.<task>``) and its headers carry
            ``Jetq-Priority``, so the relay publishes it at that level (docs/PROTOCOL.md §12)
        :raises EnqueueError: the caller's-bug subclasses, raised before anything is written
            (:class:`~jetq.errors.InvalidName`, :class:`~jetq.errors.InvalidKey`,
            :class:`~jetq.errors.InvalidOption`, :class:`~jetq.errors.SerializeError`,
            :class:`~jetq.errors.DelayTooLong`); :class:`~jetq.errors.OutboxMissing` when the
            table does not exist. Other database errors are the driver's own, as for any
            statement of the transaction.
        """
        message = self.prepare(
            queue,
            task,
            args,
            key=key,
            delay=delay,
            at=at,
            max_attempts=max_attempts,
            timeout=timeout,
            traceparent=traceparent,
            tracestate=tracestate,
            track_status=track_status,
            priority=priority,
        )
        self.write(db, message)
        return message.id

    def write(self, db: Any, message: Prepared) -> None:
        """Inserts ``message`` (from :meth:`prepare`) into the outbox table through ``db`` (a
        DB-API connection or cursor), in its current transaction."""
        params = row_of(message).params()
        cursor_factory = getattr(db, "cursor", None)
        try:
            if callable(cursor_factory):  # a connection: a cursor of our own, closed after use
                cursor = cursor_factory()
                try:
                    cursor.execute(self._insert, params)
                finally:
                    cursor.close()
            elif callable(getattr(db, "execute", None)):  # a cursor (Django's wraps the driver's)
                db.execute(self._insert, params)
            else:
                raise TypeError(f"expected a DB-API connection or cursor, not {type(db).__name__}")
        except Exception as err:
            if _sqlstate(err) == UNDEFINED_TABLE:
                raise OutboxMissing(message.task, self._table, str(err).strip().splitlines()[0]) from err
            raise


def _sqlstate(err: BaseException) -> Optional[str]:
    """The SQLSTATE of a driver error (psycopg 3: ``sqlstate``; psycopg2: ``pgcode``), looking
    through a framework's wrapper (Django raises its own class ``from`` the driver's)."""
    seen: Optional[BaseException] = err
    for _ in range(3):
        if seen is None:
            return None
        code = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(code, str):
            return code
        seen = seen.__cause__
    return None
