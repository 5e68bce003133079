"""Reading a dead letter's headers (docs/PROTOCOL.md §5), as every jetq reader reads them.

A worker moves a task that failed for good to ``<prefix>.dead.<queue>.<task>`` with the task's own
headers plus the dead-letter headers. :func:`read_dead_letter_headers` turns those headers into a
:class:`DeadLetterHeaders`, field by field named after the headers, exactly as the Rust reader
(``jetq_contract::DeadLetterHeaders::read``) does; ``docs/conformance/dead_letters.json`` holds
both to the same results.

Reading is lenient on purpose: a dead letter is the evidence of a failure, so a header that is
missing or does not parse is ``None`` for that field only, and a letter is never refused.

>>> h = read_dead_letter_headers({"Jetq-Task-Id": "01JABC", "Jetq-Attempts": " 3 "})
>>> (h.task_id, h.attempts, h.reason)
('01JABC', 3, None)
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Dict, List, Mapping, Optional

__all__ = ["DeadLetterHeaders", "read_dead_letter_headers", "DEAD_LETTER_HEADERS"]

#: The headers a worker adds to a dead letter (PROTOCOL.md §5), in the order §5 lists them.
DEAD_LETTER_HEADERS = (
    "Jetq-Task-Id",
    "Jetq-Dead-Reason",
    "Jetq-Attempts",
    "Jetq-Dead-At",
    "Jetq-Task-Sequence",
    "Jetq-Failure",
    "Jetq-Payload-Object",
    "Jetq-Payload-Size",
)

_REASONS = {"exhausted", "fatal", "undecodable", "unknown-task", "deliveries-exhausted"}
_OUTCOMES = {"error", "timeout", "panic", "lost"}
# Decimal digits with an optional "+": what the Rust reader's integer parse accepts (Python's
# int() would also take "1_000" and non-ASCII digits).
_UNSIGNED = re.compile(r"\+?[0-9]+")
_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1


@dataclasses.dataclass(frozen=True)
class DeadLetterHeaders:
    """The dead-letter headers of a stored dead letter; ``None`` where a header is missing or
    does not parse."""

    #: ``Jetq-Task-Id``: the original task id.
    task_id: Optional[str] = None
    #: ``Jetq-Dead-Reason``, as written (an unknown reason is kept).
    reason: Optional[str] = None
    #: ``Jetq-Attempts``.
    attempts: Optional[int] = None
    #: ``Jetq-Dead-At``, RFC 3339 UTC.
    dead_at: Optional[str] = None
    #: ``Jetq-Task-Sequence``: the task's sequence in the task stream.
    task_sequence: Optional[int] = None
    #: ``Jetq-Failure``: the failure record, with only the fields §5 defines.
    failure: Optional[Dict[str, Any]] = None
    #: ``Jetq-Payload-Object``: the object in ``<PREFIX>_DEAD_PAYLOADS`` holding the body.
    payload_object: Optional[str] = None
    #: ``Jetq-Payload-Size``: the body's size in bytes.
    payload_size: Optional[int] = None

    def as_dict(self) -> Dict[str, Any]:
        """The record as the conformance vectors write it."""
        return dataclasses.asdict(self)


def read_dead_letter_headers(headers: Mapping[str, str]) -> DeadLetterHeaders:
    """Reads the §5 headers of a stored dead letter (never raises: see the module docs)."""
    return DeadLetterHeaders(
        task_id=headers.get("Jetq-Task-Id"),
        reason=headers.get("Jetq-Dead-Reason"),
        attempts=_unsigned(headers.get("Jetq-Attempts"), _U32_MAX),
        dead_at=headers.get("Jetq-Dead-At"),
        task_sequence=_unsigned(headers.get("Jetq-Task-Sequence"), _U64_MAX),
        failure=_failure(headers.get("Jetq-Failure")),
        payload_object=headers.get("Jetq-Payload-Object"),
        payload_size=_unsigned(headers.get("Jetq-Payload-Size"), _U64_MAX),
    )


def _unsigned(text: Optional[str], limit: int) -> Optional[int]:
    if text is None:
        return None
    text = text.strip()
    if not _UNSIGNED.fullmatch(text):
        return None
    value = int(text)
    return value if value <= limit else None


def _is_uint(value: Any, limit: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit


def _failure(text: Optional[str]) -> Optional[Dict[str, Any]]:
    """The failure record with the fields §5 defines, or ``None`` when the header is missing,
    not JSON, or lacks (or mistypes) a required field. Unknown fields are dropped."""
    if text is None:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    if not (
        record.get("reason") in _REASONS
        and _is_uint(record.get("attempts"), _U32_MAX)
        and isinstance(record.get("error"), str)
        and isinstance(record.get("history"), list)
        and isinstance(record.get("dead_at"), str)
        and (record.get("enqueued_at") is None or isinstance(record.get("enqueued_at"), str))
    ):
        return None
    history: List[Dict[str, Any]] = []
    for attempt in record["history"]:
        if not (
            isinstance(attempt, dict)
            and _is_uint(attempt.get("attempt"), _U32_MAX)
            and attempt.get("outcome") in _OUTCOMES
            and isinstance(attempt.get("error"), str)
            and isinstance(attempt.get("at"), str)
        ):
            return None
        history.append({key: attempt[key] for key in ("attempt", "outcome", "error", "at")})
    out: Dict[str, Any] = {
        "reason": record["reason"],
        "attempts": record["attempts"],
        "error": record["error"],
        "history": history,
        "enqueued_at": record.get("enqueued_at"),
        "dead_at": record["dead_at"],
    }
    http = record.get("http")
    if http is not None:
        if not (
            isinstance(http, dict)
            and _is_uint(http.get("status"), 2**16 - 1)
            and isinstance(http.get("body"), str)
            and isinstance(http.get("body_truncated", False), bool)
        ):
            return None
        out["http"] = {
            "status": http["status"],
            "body": http["body"],
            "body_truncated": http.get("body_truncated", False),
        }
    return out
