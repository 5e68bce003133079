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
import time
from typing import Any, Dict, Optional, Union

from .errors import InvalidOption, NotSupported, SerializeError
from .names import NameKind, validate_key, validate_name

__all__ = [
    "MSG_ID",
    "ENQUEUED_AT",
    "MAX_ATTEMPTS",
    "TIMEOUT_MS",
    "TRACEPARENT",
    "TRACESTATE",
    "Subjects",
    "Prepared",
    "new_ulid",
    "format_timestamp",
    "encode_args",
    "timeout_ms",
    "prepare",
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

    @property
    def all_tasks(self) -> str:
        """``<prefix>.task.*.*``: the task stream's subjects (exactly a queue and a task token,
        so a malformed subject is refused at publish rather than stored and never consumed)."""
        return f"{self.prefix}.task.*.*"

    @property
    def tasks_stream(self) -> str:
        """The task stream: the prefix upper-cased, ``-`` turned into ``_``, plus ``_TASKS``."""
        return f"{self.prefix.upper().replace('-', '_')}_TASKS"


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


@dataclasses.dataclass(frozen=True)
class Prepared:
    """One task ready to publish. Retries resend it unchanged (same ``Nats-Msg-Id``)."""

    queue: str
    task: str
    subject: str
    id: str
    headers: Dict[str, str]
    payload: bytes


def prepare(
    subjects: Subjects,
    queue: str,
    task: str,
    args: Any,
    *,
    key: Optional[str] = None,
    delay: Optional[Seconds] = None,
    max_attempts: Optional[int] = None,
    timeout: Optional[Seconds] = None,
    traceparent: Optional[str] = None,
    tracestate: Optional[str] = None,
    enqueued_at: Optional[_dt.datetime] = None,
) -> Prepared:
    """Validates a task and builds its subject, id, headers and payload (docs/PROTOCOL.md §3).

    Raises the caller's-bug errors (:class:`~jetq.errors.InvalidName`,
    :class:`~jetq.errors.InvalidKey`, :class:`~jetq.errors.InvalidOption`,
    :class:`~jetq.errors.SerializeError`, :class:`~jetq.errors.NotSupported`) before anything
    is sent. ``tracestate`` is only sent along with a ``traceparent``.
    """
    kinds: tuple[tuple[NameKind, str], ...] = (("queue", queue), ("task", task))
    for kind, value in kinds:
        validate_name(kind, value)
    if key is not None:
        validate_key(key)
    if delay is not None:
        raise NotSupported(
            "delay",
            "docs/PROTOCOL.md defines no delayed-task protocol yet (the scheduler has not "
            "landed); enqueue without a delay, or schedule the enqueue yourself",
        )
    headers: Dict[str, str] = {
        MSG_ID: key if key is not None else new_ulid(),
        ENQUEUED_AT: format_timestamp(enqueued_at),
    }
    if max_attempts is not None:
        headers[MAX_ATTEMPTS] = str(_max_attempts(max_attempts))
    if timeout is not None:
        headers[TIMEOUT_MS] = str(timeout_ms(timeout))
    if traceparent is not None:
        headers[TRACEPARENT] = _trace_value("traceparent", traceparent)
        if tracestate is not None:
            headers[TRACESTATE] = _trace_value("tracestate", tracestate)
    return Prepared(
        queue=queue,
        task=task,
        subject=subjects.task(queue, task),
        id=headers[MSG_ID],
        headers=headers,
        payload=encode_args(task, args),
    )


def header_block_size(headers: Dict[str, str]) -> int:
    """Bytes the headers take on the wire (``NATS/1.0\\r\\n`` + ``name: value\\r\\n``... +
    ``\\r\\n``), to check a message against the server's ``max_payload`` before sending, since
    the server closes the connection of a client that sends an oversized message."""
    size = len(b"NATS/1.0\r\n") + 2
    for name, value in headers.items():
        size += len(name.encode()) + 2 + len(value.encode()) + 2
    return size
