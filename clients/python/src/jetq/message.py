"""Building a task message: the one function every way of enqueueing goes through.

:class:`~jetq.producer.AsyncProducer` (and the blocking :class:`~jetq.Producer` through it)
publishes what :func:`build_task_message` returns; the transactional outbox
(:mod:`jetq.outbox`) writes the very same message into a database row for a relay to publish.
Sharing it means a task enqueued either way carries the same subject, id, headers and payload
(docs/PROTOCOL.md §3, §7 for a delayed task, §10 for the outbox).

It adds one thing to :func:`jetq.protocol.prepare` (which is pure): the trace context of the
calling code, so it must be called in the caller's thread and context.
"""

from __future__ import annotations

import datetime as _dt
import logging
from typing import Any, Optional

from .protocol import DEFAULT_MAX_DELAY, Prepared, Seconds, Subjects, is_valid_traceparent, prepare
from .priority import PriorityLike
from .tracing import current_trace_context

__all__ = ["build_task_message"]

logger = logging.getLogger("jetq")


def build_task_message(
    subjects: Subjects,
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
    max_delay: _dt.timedelta = DEFAULT_MAX_DELAY,
) -> Prepared:
    """Validates a task and builds its message (subject, id, headers, payload) without sending it.

    ``Jetq-Enqueued-At`` is now. The trace context is the explicit ``traceparent`` if it is a
    valid W3C one, else the current OpenTelemetry span's (when ``opentelemetry-api`` is
    installed): as in the Rust producer, an invalid explicit value is ignored (logged) rather
    than failing the enqueue or reaching the worker.

    >>> message = build_task_message(Subjects(), "emails", "send_email", {"to": "ada@example.com"}, key="welcome-1")
    >>> message.subject, message.id, message.payload
    ('jetq.task.emails.send_email', 'welcome-1', b'{"to":"ada@example.com"}')

    :raises EnqueueError: the caller's-bug subclasses (:class:`~jetq.errors.InvalidName`,
        :class:`~jetq.errors.InvalidKey`, :class:`~jetq.errors.InvalidOption`,
        :class:`~jetq.errors.SerializeError`, :class:`~jetq.errors.DelayTooLong`)
    """
    if traceparent is not None and not is_valid_traceparent(traceparent):
        logger.warning("jetq: ignoring invalid traceparent %r for task %s", traceparent, task)
        traceparent, tracestate = None, None
    if traceparent is None:
        traceparent, current_state = current_trace_context()
        if tracestate is None:
            tracestate = current_state
    return prepare(
        subjects,
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
        max_delay=max_delay,
    )
