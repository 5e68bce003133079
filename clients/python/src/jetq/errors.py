"""Typed errors of the jetq Python producer.

They mirror the Rust producer's ``EnqueueError`` variants one for one, so a Django view can
decide what to tell the user the same way a Rust handler does:

==================  ==========================================================================
exception           meaning / what to do
==================  ==========================================================================
InvalidName         the queue or task name cannot be a subject token (a bug in the caller)
InvalidKey          the idempotency key cannot be a ``Nats-Msg-Id`` (a bug in the caller)
InvalidOption       ``max_attempts`` / ``timeout`` out of range (a bug in the caller)
InvalidPriority     ``priority`` is not ``high``, ``normal`` or ``low`` (an InvalidOption)
SerializeError      the arguments are not JSON-serializable (a bug in the caller)
DelayTooLong        ``delay``/``at`` is further away than the producer's maximum (30 days by
                    default); nothing was sent
NotSupported        a feature the wire protocol does not define
TooLarge            the message is over the server's size limit
StreamFull          the task stream is at its limit and refused the task: try later
NoStream            no stream captures the subject: jetq is not provisioned on this server
NotConnected        no connection to NATS: the task was not acknowledged
Timeout             no acknowledgement after every retry: the outcome is **unknown**; enqueue
                    again with the same idempotency key (safe inside the duplicate window)
Rejected            the server refused the task for another reason
NotInTransaction    an outbox enqueue outside a database transaction (jetq.django): nothing
                    was written; wrap it in ``transaction.atomic()``
OutboxMissing       the outbox table does not exist: run its migration
==================  ==========================================================================

Every enqueue failure derives from :class:`EnqueueError`, every jetq error from
:class:`JetqError`. ``status`` / ``wait`` / ``cancel`` raise the subclasses of
:class:`StatusError` (the Rust producer's ``StatusError`` variants).
"""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # pragma: no cover
    from .status import TaskStatus

__all__ = [
    "JetqError",
    "ConfigError",
    "ConnectError",
    "ServerTooOld",
    "EnqueueError",
    "InvalidName",
    "InvalidKey",
    "InvalidOption",
    "InvalidPriority",
    "SerializeError",
    "NotSupported",
    "DelayTooLong",
    "TooLarge",
    "StreamFull",
    "NoStream",
    "NotConnected",
    "Timeout",
    "Rejected",
    "NotInTransaction",
    "OutboxMissing",
    "ProducerClosed",
    "StatusError",
    "StatusUnavailable",
    "StatusReadError",
    "StatusWriteError",
    "StatusCorrupt",
    "StatusNotFound",
    "WaitTimeout",
    "InvalidArtifactName",
    "ArtifactNotFound",
]

#: Characters a name may contain, as the Rust producer words it in its messages.
ALLOWED_NAME = "1-64 characters of A-Z a-z 0-9 _ -"


class JetqError(Exception):
    """Base class of every error raised by this package."""


class ConfigError(JetqError, ValueError):
    """The configuration is unusable; :attr:`field` names the variable to fix."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"invalid {field}: {problem}")


class ConnectError(JetqError):
    """No server accepted the connection (unreachable, TLS or authentication failure)."""

    def __init__(self, urls: str, reason: str) -> None:
        self.urls = urls
        self.reason = reason
        super().__init__(f"cannot connect to NATS at {urls}: {reason}")


class ServerTooOld(ConnectError):
    """The server is older than 2.10.0, which jetq refuses (as the Rust side does)."""

    def __init__(self, urls: str, found: str, required: str) -> None:
        self.found = found
        self.required = required
        JetqError.__init__(
            self,
            f"nats-server {found} is too old for jetq: {required} or newer is required "
            "(2.10.23 or newer in production); older servers silently ignore settings jetq "
            "relies on",
        )
        self.urls = urls
        self.reason = "server too old"


class EnqueueError(JetqError):
    """Base class of everything that stops a task from being enqueued."""


class InvalidName(EnqueueError, ValueError):
    """A queue, task or prefix name that cannot be a subject token.

    :attr:`kind` is ``"queue"``, ``"task"`` or ``"prefix"``; :attr:`reason` is the same text the
    Rust producer gives.
    """

    _KIND_TEXT = {"queue": "queue name", "task": "task name", "prefix": "subject prefix"}

    def __init__(self, kind: str, value: str, reason: str) -> None:
        self.kind = kind
        self.value = value
        self.reason = reason
        text = self._KIND_TEXT.get(kind, kind)
        super().__init__(f"invalid {text} {value!r}: {reason} (allowed: {ALLOWED_NAME})")


class InvalidKey(EnqueueError, ValueError):
    """An idempotency key that cannot be sent as a ``Nats-Msg-Id`` header value."""

    def __init__(self, value: str, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"invalid idempotency key {value!r}: {reason}")


class InvalidOption(EnqueueError, ValueError):
    """An enqueue option (``max_attempts``, ``timeout``, ``traceparent``) out of range."""

    def __init__(self, option: str, problem: str) -> None:
        self.option = option
        self.problem = problem
        super().__init__(f"invalid {option}: {problem}")


class InvalidPriority(InvalidOption):
    """A ``priority`` that is not one of the levels (docs/PROTOCOL.md §12); nothing was sent.

    ``str(err)`` and :attr:`reason` are the text every jetq producer gives, e.g.
    ``unknown priority "urgent": the levels are "high", "normal" and "low"``; :attr:`value` is
    the rejected value.
    """

    def __init__(self, value: object, reason: str) -> None:
        self.option = "priority"
        self.problem = reason
        self.value = value
        self.reason = reason
        EnqueueError.__init__(self, reason)


class SerializeError(EnqueueError, TypeError):
    """The task's arguments cannot be encoded as JSON."""

    def __init__(self, task: str, reason: str) -> None:
        self.task = task
        self.reason = reason
        super().__init__(f"cannot serialize the arguments of task {task} to JSON: {reason}")


class NotSupported(EnqueueError):
    """A feature the wire protocol (docs/PROTOCOL.md) does not define yet."""

    def __init__(self, feature: str, detail: str) -> None:
        self.feature = feature
        self.detail = detail
        super().__init__(f"{feature} is not supported: {detail}")


class DelayTooLong(EnqueueError, ValueError):
    """The delay (for ``at=``: the time from now to the due time) is longer than the
    producer's maximum (``JETQ_MAX_DELAY`` / ``Config.max_delay``, 30 days by default, as the
    Rust producer's).
    Nothing was sent."""

    def __init__(self, task: str, delay: _dt.timedelta, max_delay: _dt.timedelta) -> None:
        self.task = task
        self.delay = delay
        self.max_delay = max_delay
        super().__init__(f"task {task} cannot be delayed by {delay}: the maximum delay is {max_delay}")


class TooLarge(EnqueueError):
    """The message (arguments plus headers) is larger than the server accepts."""

    def __init__(self, task: str, size: int, limit: Optional[int], detail: str = "") -> None:
        self.task = task
        self.size = size
        self.limit = limit
        limit_text = f"{limit} bytes" if limit is not None else "the stream's limit"
        suffix = f" ({detail})" if detail else ""
        super().__init__(f"task {task} is {size} bytes, over the server's limit of {limit_text}{suffix}")


class StreamFull(EnqueueError):
    """The task stream is at its message or byte limit and refused the task (``discard: new``).

    Nothing was queued and nothing already queued was dropped: try again later.
    """

    def __init__(self, task: str, description: str) -> None:
        self.task = task
        self.description = description
        super().__init__(f"the task stream is full and refused task {task}: {description}")


class NoStream(EnqueueError):
    """No stream captures the subject: the jetq task stream was never provisioned (start a
    worker, or a Rust producer with provisioning on) or was deleted."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(f"no stream accepts subject {subject}: the jetq task stream does not exist")


class NotConnected(EnqueueError):
    """The client is not connected to any server; the task was not acknowledged."""

    def __init__(self, task: str, attempts: int, message: Optional[str] = None) -> None:
        self.task = task
        self.attempts = attempts
        super().__init__(
            message
            or f"not connected to NATS; task {task} was not acknowledged after {attempts} attempt(s)"
        )


class NotInTransaction(EnqueueError):
    """An outbox enqueue (:func:`jetq.django.enqueue`) outside a database transaction.

    Outside a transaction the row would commit on its own, not together with the caller's other
    writes, which is the whole point of the outbox; nothing was written. Wrap the writes and the
    enqueue in ``transaction.atomic()`` (around the enqueue alone if committing it on its own is
    really what you want).
    """

    def __init__(self, task: str, database: str) -> None:
        self.task = task
        self.database = database
        super().__init__(
            f"task {task} was not written to the outbox: database {database!r} is not in a transaction; "
            "enqueue inside `with transaction.atomic():` so the task commits or rolls back with your writes"
        )


class OutboxMissing(EnqueueError):
    """The outbox table does not exist in the database written to (docs/PROTOCOL.md §10).

    Create it with its migration: ``python manage.py migrate jetq`` with ``jetq.django`` in
    ``INSTALLED_APPS``, or the SQL of :data:`jetq.outbox_schema.MIGRATION_0001`
    (``outbox/migrations/0001_jetq_outbox.sql`` in the jetq repository). The transaction the
    INSERT ran in is aborted (PostgreSQL): roll it back.
    """

    def __init__(self, task: str, table: str, detail: str) -> None:
        self.task = task
        self.table = table
        self.detail = detail
        super().__init__(
            f"task {task} was not written: the outbox table {table} does not exist ({detail}); "
            "run its migration (python manage.py migrate jetq, or outbox/migrations/0001_jetq_outbox.sql)"
        )


class ProducerClosed(NotConnected):
    """The producer was closed; nothing can be enqueued through it any more."""

    def __init__(self, task: str) -> None:
        super().__init__(task, 0, f"the producer is closed; task {task} was not enqueued")


class Timeout(EnqueueError):
    """No acknowledgement arrived in time, after every retry with the same ``Nats-Msg-Id``.

    The outcome is unknown: the task may be queued. Enqueueing again with the same
    idempotency key (the :attr:`id`) is safe inside the stream's duplicate window.
    """

    def __init__(self, task: str, id: str, timeout: float, attempts: int) -> None:
        self.task = task
        self.id = id
        self.timeout = timeout
        self.attempts = attempts
        super().__init__(
            f"no acknowledgement for task {task} (id {id}) within {timeout:g}s after {attempts} "
            "attempt(s): it may or may not be queued; retry with the same key"
        )


class Rejected(EnqueueError):
    """The server rejected the task for a reason without its own exception."""

    def __init__(
        self, task: str, description: str, code: Optional[int] = None, err_code: Optional[int] = None
    ) -> None:
        self.task = task
        self.description = description
        self.code = code
        self.err_code = err_code
        super().__init__(
            f"the server rejected task {task}: {description} (code {code}, err_code {err_code})"
        )


class StatusError(JetqError):
    """Base class of the failures of ``status``, ``wait`` and ``cancel``."""


class StatusUnavailable(StatusError):
    """The status bucket does not exist and could not be created (``JETQ_PROVISION=false``, or
    a NATS user that may not create it). Tracked tasks still run; they have no record."""

    def __init__(self, bucket: str, reason: str) -> None:
        self.bucket = bucket
        self.reason = reason
        super().__init__(f"the jetq status store is not available: bucket {bucket}: {reason}")


class StatusReadError(StatusError):
    """Reading the record failed (server unreachable, timeout)."""

    def __init__(self, id: str, reason: str) -> None:
        self.id = id
        self.reason = reason
        super().__init__(f"cannot read the status of task {id}: {reason}")


class StatusWriteError(StatusError):
    """Writing the record failed."""

    def __init__(self, id: str, reason: str) -> None:
        self.id = id
        self.reason = reason
        super().__init__(f"cannot write the status of task {id}: {reason}")


class StatusCorrupt(StatusError):
    """The record is not valid status JSON."""

    def __init__(self, id: str, reason: str) -> None:
        self.id = id
        self.reason = reason
        super().__init__(f"the status record of task {id} is not valid: {reason}")


class StatusNotFound(StatusError, LookupError):
    """No record: the task id is unknown, it is not tracked, or its record expired
    (``JETQ_STATUS_TTL``). Only ``cancel`` raises it; ``status`` returns None."""

    def __init__(self, id: str) -> None:
        self.id = id
        super().__init__(f"task {id} has no status record (unknown id, untracked type, or expired)")


class WaitTimeout(StatusError):
    """``wait`` ran out of time before the task reached a terminal state; :attr:`last` is the
    last record seen (None if there was none)."""

    def __init__(self, id: str, waited: float, last: "Optional[TaskStatus]") -> None:
        self.id = id
        self.waited = waited
        self.last = last
        state = last.state.value if last is not None else "none"
        super().__init__(f"task {id} did not finish within {waited:g}s (last state: {state})")


class InvalidArtifactName(StatusError, ValueError):
    """An artifact name that is not 1-128 characters of ``[A-Za-z0-9._-]`` not starting with
    ``.`` (the Rust side's rule)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"invalid artifact name {name!r}: 1-128 characters of A-Z a-z 0-9 . _ -, not starting with '.'"
        )


class ArtifactNotFound(StatusError, LookupError):
    """The task has no artifact by that name (never stored, expired, or no artifact store)."""

    def __init__(self, id: str, name: str) -> None:
        self.id = id
        self.name = name
        super().__init__(f"task {id} has no artifact {name}")
