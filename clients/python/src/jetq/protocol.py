"""The wire contract of docs/PROTOCOL.md: subjects, header names, ids, timestamps, payloads.

Everything that decides what goes on the wire lives here, free of any I/O, so the shared
conformance vectors (``docs/conformance/vectors.json``) can test it piece by piece and
:func:`prepare` builds exactly the message the Rust producer builds for the same task.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import re
import time
from typing import Any, Dict, Optional, Tuple, Union

from .errors import DelayTooLong, InvalidOption, SerializeError
from .names import NameKind, validate_key, validate_name
from .priority import PRIORITY, Priority, PriorityLike, parse_priority, queue_token, split_queue_token

__all__ = [
    "MSG_ID",
    "ENQUEUED_AT",
    "MAX_ATTEMPTS",
    "TIMEOUT_MS",
    "TRACEPARENT",
    "TRACESTATE",
    "NOT_BEFORE",
    "TRACK_STATUS",
    "PRIORITY",
    "DEFAULT_MAX_DELAY",
    "Subjects",
    "Prepared",
    "new_ulid",
    "format_timestamp",
    "encode_args",
    "timeout_ms",
    "prepare",
    "due_time",
    "due_second",
    "parse_timestamp",
    "attempt_number",
    "dead_payload_object",
    "PAYLOAD_OBJECT",
    "PAYLOAD_SIZE",
    "header_block_size",
    "is_valid_traceparent",
]

# Header names are case-sensitive on the wire.
#: The task id, or the caller's idempotency key.
MSG_ID = "Nats-Msg-Id"
#: When the task was enqueued, RFC 3339 UTC with microseconds.
ENQUEUED_AT = "Jetq-Enqueued-At"
#: Per-task override of the type's maximum attempts (decimal integer >= 1).
MAX_ATTEMPTS = "Jetq-Max-Attempts"
#: Per-task override of the per-attempt timeout in milliseconds (decimal integer >= 1).
TIMEOUT_MS = "Jetq-Timeout-Ms"
#: W3C trace context.
TRACEPARENT = "traceparent"
#: W3C trace state, sent along with ``traceparent``.
TRACESTATE = "tracestate"
#: A delayed task's due time, RFC 3339 UTC; its second is the delayed subject's ``<due>`` token.
NOT_BEFORE = "Jetq-Not-Before"
#: Asks workers to track this task's status (value ``1``), docs/PROTOCOL.md §8.
TRACK_STATUS = "Jetq-Track-Status"

#: The longest delay a producer accepts unless configured otherwise: 30 days, as the Rust
#: producer (``jetq_contract::delayed::DEFAULT_MAX_DELAY``).
DEFAULT_MAX_DELAY = _dt.timedelta(days=30)
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


@dataclasses.dataclass(frozen=True)
class Subjects:
    """Subjects and stream names derived from one prefix (docs/PROTOCOL.md §2).

    >>> s = Subjects("my-app")
    >>> s.task("emails", "send_email"), s.tasks_stream
    ('my-app.task.emails.send_email', 'MY_APP_TASKS')
    """

    prefix: str = "jetq"

    def __post_init__(self) -> None:
        validate_name("prefix", self.prefix)

    def task(self, queue: str, task: str) -> str:
        """``<prefix>.task.<queue>.<task>`` (names are not validated here)."""
        return f"{self.prefix}.task.{queue}.{task}"

    def task_at(self, queue: str, level: PriorityLike, task: str) -> str:
        """``<prefix>.task.<queue>~<level>.<task>``, the plain task subject for ``normal``
        (docs/PROTOCOL.md §12).

        >>> Subjects().task_at("emails", "high", "send")
        'jetq.task.emails~high.send'
        """
        return self.task(queue_token(queue, level), task)

    def parse_task_level(self, subject: str) -> Optional[Tuple[str, Priority, str]]:
        """A task subject split into ``(queue, level, task)``; None if it is not a task subject
        of this prefix or names a level that does not exist.

        >>> Subjects().parse_task_level("jetq.task.emails~low.send")
        ('emails', <Priority.LOW: 'low'>, 'send')
        """
        start = f"{self.prefix}.task."
        if not subject.startswith(start):
            return None
        token, dot, task = subject[len(start) :].partition(".")
        if not dot or not token or not task or "." in task:
            return None
        split = split_queue_token(token)
        if split is None:
            return None
        return split[0], split[1], task

    @property
    def all_tasks(self) -> str:
        """``<prefix>.task.*.*``: the task stream's subjects (exactly a queue and a task token,
        so a malformed subject is refused at publish rather than stored and never consumed)."""
        return f"{self.prefix}.task.*.*"

    @property
    def tasks_stream(self) -> str:
        """The task stream: the prefix upper-cased, ``-`` turned into ``_``, plus ``_TASKS``."""
        return f"{self._upper}_TASKS"

    def delayed(self, due: int, queue: str, task: str) -> str:
        """``<prefix>.delayed.<due>.<queue>.<task>``: where a task due in unix second ``due``
        waits for the scheduler (docs/PROTOCOL.md §7).

        >>> Subjects().delayed(1790000000, "emails", "send")
        'jetq.delayed.1790000000.emails.send'
        """
        return f"{self.prefix}.delayed.{due}.{queue}.{task}"

    @property
    def all_delayed(self) -> str:
        """``<prefix>.delayed.*.*.*``: the delayed-task stream's subjects."""
        return f"{self.prefix}.delayed.*.*.*"

    @property
    def delayed_stream(self) -> str:
        """The delayed-task stream, e.g. ``JETQ_DELAYED``."""
        return f"{self._upper}_DELAYED"

    @property
    def status_bucket(self) -> str:
        """The KV bucket of task status records, e.g. ``JETQ_STATUS`` (docs/PROTOCOL.md §8)."""
        return f"{self._upper}_STATUS"

    @property
    def artifacts_bucket(self) -> str:
        """The object store of task artifacts, e.g. ``JETQ_ARTIFACTS``."""
        return f"{self._upper}_ARTIFACTS"

    @property
    def _upper(self) -> str:
        return self.prefix.upper().replace("-", "_")


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_ulid(now: Optional[float] = None) -> str:
    """A fresh ULID (26 characters, Crockford base32): 48 bits of milliseconds since the
    epoch, then 80 random bits. The Rust producer's task ids have the same form.

    >>> len(new_ulid())
    26
    """
    millis = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def format_timestamp(at: Optional[_dt.datetime] = None) -> str:
    """RFC 3339 in UTC with microseconds, e.g. ``2026-11-27T07:00:00.123456Z``."""
    moment = _dt.datetime.now(_dt.timezone.utc) if at is None else at.astimezone(_dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_TIMESTAMP = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)


def parse_timestamp(text: str) -> Optional[_dt.datetime]:
    """A timestamp in the form every jetq reader accepts (docs/PROTOCOL.md §3, "Timestamps"):
    ``YYYY-MM-DDTHH:MM:SS``, an optional fraction of 1 to 9 digits (cut to microseconds), then
    ``Z`` or a numeric offset ``+HH:MM``/``-HH:MM``; ``T`` and ``Z`` may be lower case. Returned
    as an aware UTC datetime; None for anything else (no zone, a space for ``T``, an impossible
    date), exactly as the Rust side's ``jetq_contract::time::parse``.

    >>> parse_timestamp("2026-11-27T07:00:00.123456789Z")
    datetime.datetime(2026, 11, 27, 7, 0, 0, 123456, tzinfo=datetime.timezone.utc)
    """
    if not isinstance(text, str):
        return None
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        return None
    date, time, fraction, zulu, sign, hours, minutes = match.groups()
    if not zulu and (int(hours) > 23 or int(minutes) > 59):
        return None
    try:
        moment = _dt.datetime.fromisoformat(f"{date}T{time}.{((fraction or '') + '000000')[:6]}+00:00")
    except ValueError:
        return None
    if not zulu:
        offset = _dt.timedelta(hours=int(hours), minutes=int(minutes))
        try:
            moment = moment - offset if sign == "+" else moment + offset
        except OverflowError:
            return None
    return moment


def same_instant(a: Optional[str], b: Optional[str]) -> bool:
    """True if both timestamps parse and name the same microsecond (a worker may write the
    enqueue time in another accepted form than the producer sent)."""
    first, second = parse_timestamp(a or ""), parse_timestamp(b or "")
    return first is not None and first == second


def encode_args(task: str, args: Any) -> bytes:
    """The task's arguments as compact UTF-8 JSON: the bytes serde_json would write for the
    same value (no spaces, non-ASCII characters unescaped). NaN and infinities are refused,
    since they are not JSON.
    """
    try:
        text = json.dumps(args, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise SerializeError(task, str(err)) from None
    return text.encode("utf-8")


Seconds = Union[int, float, _dt.timedelta]


def timeout_ms(timeout: Seconds) -> int:
    """A per-attempt timeout (seconds, or a ``timedelta``) as whole milliseconds, at least 1,
    rounded down as the Rust producer does (``Duration::as_millis().max(1)``).
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float, _dt.timedelta)):
        raise InvalidOption("timeout", f"{timeout!r} is not a number of seconds or a timedelta")
    if isinstance(timeout, _dt.timedelta):
        delta = timeout
    else:
        if not math.isfinite(timeout):
            raise InvalidOption("timeout", f"{timeout!r} is not a finite number of seconds")
        try:
            delta = _dt.timedelta(seconds=timeout)
        except OverflowError:
            raise InvalidOption("timeout", f"{timeout!r} seconds is out of range") from None
    if delta <= _dt.timedelta(0):
        raise InvalidOption("timeout", f"{timeout!r} must be greater than zero")
    return max(1, delta // _dt.timedelta(milliseconds=1))


def _max_attempts(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOption("max_attempts", f"{value!r} is not an integer")
    if value < 1:
        raise InvalidOption("max_attempts", f"{value} must be at least 1")
    if value > 0xFFFFFFFF:
        raise InvalidOption("max_attempts", f"{value} is above the limit of {0xFFFFFFFF}")
    return value


_HEX = frozenset("0123456789abcdef")


def is_valid_traceparent(value: object) -> bool:
    """True for a W3C ``traceparent`` a worker can continue: ``00-<32 hex>-<16 hex>-<2 hex>``
    (lower case; a future version may append fields), trace and span ids not all zeros, version
    not ``ff``."""
    if not isinstance(value, str):
        return False
    parts = value.split("-")
    if len(parts) < 4:
        return False
    version, trace_id, span_id, flags = parts[:4]
    lengths_ok = (len(version), len(trace_id), len(span_id), len(flags)) == (2, 32, 16, 2)
    if not lengths_ok or not all(set(part) <= _HEX for part in parts[:4]):
        return False
    if version == "ff" or (version == "00" and len(parts) != 4):
        return False
    return trace_id != "0" * 32 and span_id != "0" * 16


def _trace_value(option: str, value: str) -> str:
    if option == "traceparent" and not is_valid_traceparent(value):
        raise InvalidOption(option, f"{value!r} is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)")
    if not isinstance(value, str) or not value or not all(" " <= c <= "~" for c in value):
        raise InvalidOption(option, f"{value!r} is not a printable ASCII header value")
    return value


def due_time(
    task: str,
    *,
    delay: Optional[Seconds] = None,
    at: Optional[_dt.datetime] = None,
    max_delay: _dt.timedelta = DEFAULT_MAX_DELAY,
    now: Optional[_dt.datetime] = None,
) -> Optional[_dt.datetime]:
    """When a delayed task becomes due (aware UTC, microseconds), or None to enqueue it at once.

    Mirrors the Rust producer's ``enqueue_in`` / ``enqueue_at``: ``delay`` (seconds or a
    ``timedelta``, Celery's ``countdown``) or ``at`` (an aware ``datetime``, Celery's ``eta``);
    a zero delay or a due time already past means "now"; a delay above ``max_delay`` raises
    :class:`~jetq.errors.DelayTooLong`.

    >>> t0 = _dt.datetime(2026, 11, 27, 7, 0, tzinfo=_dt.timezone.utc)
    >>> due_time("t", delay=1.5, now=t0)
    datetime.datetime(2026, 11, 27, 7, 0, 1, 500000, tzinfo=datetime.timezone.utc)
    >>> due_time("t", at=t0 - _dt.timedelta(seconds=1), now=t0) is None
    True
    """
    if delay is None and at is None:
        return None
    if delay is not None and at is not None:
        raise InvalidOption("delay", "give either delay= (a countdown) or at= (a due time), not both")
    moment = _dt.datetime.now(_dt.timezone.utc) if now is None else now.astimezone(_dt.timezone.utc)
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, (int, float, _dt.timedelta)):
            raise InvalidOption("delay", f"{delay!r} is not a number of seconds or a timedelta")
        if isinstance(delay, _dt.timedelta):
            wait = delay
        else:
            if not math.isfinite(delay):
                raise InvalidOption("delay", f"{delay!r} is not a finite number of seconds")
            try:
                wait = _dt.timedelta(seconds=delay)
            except OverflowError:
                raise DelayTooLong(task, _dt.timedelta.max, max_delay) from None
        if wait < _dt.timedelta(0):
            raise InvalidOption("delay", f"{delay!r} is negative; use at= for a due time in the past")
        if wait > max_delay:
            raise DelayTooLong(task, wait, max_delay)
        if wait == _dt.timedelta(0):
            return None
        try:
            return moment + wait
        except OverflowError:  # pragma: no cover - max_delay keeps it in range
            raise DelayTooLong(task, wait, max_delay) from None
    assert at is not None
    if not isinstance(at, _dt.datetime):
        raise InvalidOption("at", f"{at!r} is not a datetime")
    if at.tzinfo is None or at.tzinfo.utcoffset(at) is None:
        raise InvalidOption(
            "at",
            f"{at!r} is a naive datetime; pass an aware one, e.g. "
            "datetime.now(timezone.utc) + timedelta(hours=1) or django.utils.timezone.now() + ...",
        )
    due = at.astimezone(_dt.timezone.utc)
    wait = due - moment
    if wait > max_delay:
        raise DelayTooLong(task, wait, max_delay)
    if wait <= _dt.timedelta(0):
        return None
    return due


def due_second(due: _dt.datetime) -> int:
    """The per-second bucket of a due time: its unix second, rounded down (0 before the epoch).

    >>> due_second(_dt.datetime(2026, 1, 1, 0, 0, 0, 999999, tzinfo=_dt.timezone.utc))
    1767225600
    """
    return max(0, (due - _EPOCH) // _dt.timedelta(seconds=1))


@dataclasses.dataclass(frozen=True)
class Prepared:
    """One task ready to publish. Retries resend it unchanged (same ``Nats-Msg-Id``)."""

    queue: str
    task: str
    subject: str
    id: str
    headers: Dict[str, str]
    payload: bytes
    #: True when the id is a fresh ULID of ours rather than the caller's idempotency key: the
    #: only message that can share it is an earlier attempt of this very publish.
    generated_id: bool = False
    #: Track the task's status (``Jetq-Track-Status: 1``; the producer writes ``queued``).
    tracked: bool = False
    #: A delayed task's due time (the ``Jetq-Not-Before`` value); None for an immediate task.
    not_before: Optional[str] = None
    #: The task's level within its queue (docs/PROTOCOL.md §12); its subject carries it.
    priority: Priority = Priority.NORMAL

    @property
    def delayed(self) -> bool:
        """True when this is published to the delayed-task stream."""
        return self.not_before is not None


def prepare(
    subjects: Subjects,
    queue: str,
    task: str,
    args: Any,
    *,
    key: Optional[str] = None,
    delay: Optional[Seconds] = None,
    at: Optional[_dt.datetime] = None,
    max_attempts: Optional[int] = None,
    timeout: Optional[Seconds] = None,
    traceparent: Optional[str] = None,
    tracestate: Optional[str] = None,
    track_status: bool = False,
    enqueued_at: Optional[_dt.datetime] = None,
    max_delay: _dt.timedelta = DEFAULT_MAX_DELAY,
    now: Optional[_dt.datetime] = None,
    priority: Optional[PriorityLike] = None,
) -> Prepared:
    """Validates a task and builds its subject, id, headers and payload (docs/PROTOCOL.md §3,
    and §7 for a delayed one: ``delay``/``at`` in the future publish to
    ``<prefix>.delayed.<due second>.<queue>.<task>`` with ``Jetq-Not-Before``).

    Raises the caller's-bug errors (:class:`~jetq.errors.InvalidName`,
    :class:`~jetq.errors.InvalidKey`, :class:`~jetq.errors.InvalidOption`,
    :class:`~jetq.errors.SerializeError`, :class:`~jetq.errors.DelayTooLong`) before anything
    is sent. ``tracestate`` is only sent along with a ``traceparent``. ``priority`` (``"high"``,
    ``"normal"``, ``"low"`` or a :class:`~jetq.Priority`; None is ``normal``) puts the task on
    its level's subject (``<queue>~high``) with ``Jetq-Priority`` (§12), or raises
    :class:`~jetq.errors.InvalidPriority`.
    """
    kinds: tuple[tuple[NameKind, str], ...] = (("queue", queue), ("task", task))
    for kind, value in kinds:
        validate_name(kind, value)
    if key is not None:
        validate_key(key)
    if not isinstance(track_status, bool):
        raise InvalidOption("track_status", f"{track_status!r} is not True or False")
    level = parse_priority(priority)
    due = due_time(task, delay=delay, at=at, max_delay=max_delay, now=now)
    headers: Dict[str, str] = {
        MSG_ID: key if key is not None else new_ulid(),
        ENQUEUED_AT: format_timestamp(enqueued_at),
    }
    if max_attempts is not None:
        headers[MAX_ATTEMPTS] = str(_max_attempts(max_attempts))
    if timeout is not None:
        headers[TIMEOUT_MS] = str(timeout_ms(timeout))
    if track_status:
        headers[TRACK_STATUS] = "1"
    if level is not Priority.NORMAL:
        headers[PRIORITY] = level.value
    if traceparent is not None:
        headers[TRACEPARENT] = _trace_value("traceparent", traceparent)
        if tracestate is not None:
            headers[TRACESTATE] = _trace_value("tracestate", tracestate)
    payload = encode_args(task, args)
    not_before: Optional[str] = None
    token = queue_token(queue, level)
    if due is None:
        subject = subjects.task(token, task)
    else:
        # The header and the subject's second come from the same instant, so they always agree.
        not_before = format_timestamp(due)
        headers[NOT_BEFORE] = not_before
        subject = subjects.delayed(due_second(due), token, task)
    return Prepared(
        queue=queue,
        task=task,
        subject=subject,
        id=headers[MSG_ID],
        headers=headers,
        payload=payload,
        generated_id=key is None,
        tracked=track_status,
        not_before=not_before,
        priority=level,
    )


def header_block_size(headers: Dict[str, str]) -> int:
    """Bytes the headers take on the wire (``NATS/1.0\\r\\n`` + ``name: value\\r\\n``... +
    ``\\r\\n``), to check a message against the server's ``max_payload`` before sending, since
    the server closes the connection of a client that sends an oversized message."""
    size = len(b"NATS/1.0\r\n") + 2
    for name, value in headers.items():
        size += len(name.encode()) + 2 + len(value.encode()) + 2
    return size


#: On a dead letter whose body did not fit beside its failure headers: the object in the
#: ``<PREFIX>_DEAD_PAYLOADS`` object store holding the body (PROTOCOL.md §5).
PAYLOAD_OBJECT = "Jetq-Payload-Object"
#: With ``PAYLOAD_OBJECT``: the body's size in bytes.
PAYLOAD_SIZE = "Jetq-Payload-Size"


def dead_payload_object(sequence: int, task_id: str) -> str:
    """The object name of the body of a dead letter too large to carry it (PROTOCOL.md §5):
    ``<task stream sequence>-<task id's UTF-8 bytes as lower-case hex>``."""
    return f"{sequence}-{task_id.encode().hex()}"


def attempt_number(record: Optional[bytes], delivered: int) -> int:
    """The attempt number of a delivery (PROTOCOL.md §4): JetStream's delivery count minus the
    hand-backs in the task's attempt record (``JETQ_ATTEMPTS``), never below 1. ``record`` is the
    stored value, or ``None`` when there is none; an unreadable record counts as none."""
    hand_backs = 0
    if record is not None:
        try:
            parsed = json.loads(record)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            value = parsed.get("hand_backs", 0)
            if isinstance(value, int) and value >= 0:
                hand_backs = value
    return max(1, delivered - hand_backs)
