"""Enqueueing from Django views: in the transaction (:func:`enqueue`, the outbox) or after it
(:func:`enqueue_on_commit`)."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import threading
from typing import Any, Optional

from django.db import DEFAULT_DB_ALIAS, connections, transaction

from ..config import Config
from ..errors import ConfigError, JetqError, NotInTransaction
from ..message import build_task_message
from ..outbox import Outbox
from ..priority import PriorityLike
from ..protocol import Prepared, Seconds, Subjects
from ..sync import Producer

__all__ = ["enqueue", "enqueue_on_commit", "default_producer", "close_default_producer"]

logger = logging.getLogger("jetq")

_lock = threading.Lock()
_producer: Optional[Producer] = None
_producer_pid: Optional[int] = None


def enqueue(
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
    using: Optional[str] = None,
    outbox: Optional[Outbox] = None,
) -> str:
    """Writes a task into the outbox table inside the current transaction of database
    ``using`` and returns its id. It commits or rolls back with the view's other writes; once
    committed, ``jetq-relay`` publishes it (at least once; a second copy is dropped by
    ``Nats-Msg-Id``). Nothing is sent to NATS here, so NATS being down does not fail the view.

    ::

        with transaction.atomic():
            member = Member.objects.create(email=email)
            jetq.django.enqueue("emails", "send_email", {"to": email}, key=f"welcome-{member.pk}")

    Must run inside ``transaction.atomic()`` (or ``ATOMIC_REQUESTS``, or with autocommit
    turned off): outside a transaction Django commits every statement on its own, so the task
    would not be atomic with the writes before it — which is what the outbox is for. To commit a
    task on its own, wrap the single call in ``atomic()``.

    Arguments as :meth:`jetq.outbox.Outbox.enqueue`; ``using`` is the database alias (default
    ``"default"``, which must be PostgreSQL with the ``jetq`` app's migration applied);
    ``outbox`` the writer (default: the ``JETQ_*`` environment's prefix and maximum delay,
    table ``jetq_outbox``).

    :raises EnqueueError: bad input, before anything is written (see
        :meth:`jetq.outbox.Outbox.enqueue`); :class:`~jetq.errors.NotInTransaction`;
        :class:`~jetq.errors.OutboxMissing` when the migration was not applied
    :raises ConfigError: the database is not PostgreSQL
    """
    writer = outbox if outbox is not None else Outbox.from_env()
    message = writer.prepare(
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
    alias = using or DEFAULT_DB_ALIAS
    connection = connections[alias]
    if connection.vendor != "postgresql":
        raise ConfigError(
            f"DATABASES[{alias!r}]",
            f"the jetq outbox needs PostgreSQL, this database is {connection.vendor} "
            "(use enqueue_on_commit, or enqueue through a PostgreSQL database with using=)",
        )
    if not connection.in_atomic_block and connection.get_autocommit():
        raise NotInTransaction(task, alias)
    with connection.cursor() as cursor:
        writer.write(cursor, message)
    return message.id


def enqueue_on_commit(
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
    using: Optional[str] = None,
    producer: Optional[Producer] = None,
) -> str:
    """Publishes a task once the current transaction of database ``using`` commits
    (``transaction.on_commit``), with a normal enqueue; nothing if it rolls back. Returns the
    task id it will have. Needs no outbox table and no relay, and works on any database.

    **The weaker guarantee**: commit and publish are two steps. If the process dies, or NATS
    does not acknowledge, between the commit and the publish, the task is lost — logged at
    ERROR (logger ``jetq``) with its id, but not retried. Use :func:`enqueue` when that is not
    acceptable.

    The task is validated and its message built now, in the view (bad input raises here, and
    the current span's trace context is captured); ``Jetq-Enqueued-At`` is therefore the time
    of this call. Outside a transaction, Django runs the callback at once (still through the
    same error handling). ``producer`` is the :class:`jetq.Producer` to publish with (default:
    :func:`default_producer`, resolved at commit time).

    :raises EnqueueError: bad input (see :meth:`jetq.Producer.enqueue`), before anything is
        registered
    """
    config = producer.config if producer is not None else Config.from_env()
    message = build_task_message(
        Subjects(config.prefix),
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
        max_delay=config.max_delay_timedelta,
    )

    def publish() -> None:
        _publish_committed(message, producer)

    transaction.on_commit(publish, using=using)
    return message.id


def _publish_committed(message: Prepared, producer: Optional[Producer]) -> None:
    """The ``on_commit`` callback: the data is committed, so a failure here cannot undo it and
    must not turn the response into an error; it is logged with what was lost."""
    try:
        (producer if producer is not None else default_producer()).publish_prepared(message)
    except JetqError as err:
        logger.error(
            "jetq: task %s (id %s, queue %s) was NOT enqueued after the transaction committed (%s): %s",
            message.task, message.id, message.queue, type(err).__name__, err,
        )  # fmt: skip


def default_producer() -> Producer:
    """This process's :class:`jetq.Producer`, connected with the ``JETQ_*`` environment on
    first use — and again in a forked child (gunicorn workers), which cannot share the parent's
    connection."""
    global _producer, _producer_pid
    with _lock:
        if _producer is None or _producer_pid != os.getpid():
            _producer = Producer.from_env()
            _producer_pid = os.getpid()
        return _producer


def close_default_producer() -> None:
    """Closes this process's default producer; the next use connects again (tests, or a
    changed environment)."""
    global _producer
    with _lock:
        if _producer is not None and _producer_pid == os.getpid():
            _producer.close()
        _producer = None
