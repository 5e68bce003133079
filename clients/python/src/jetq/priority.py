"""Priorities within a queue (docs/PROTOCOL.md §12).

A queue has three levels, pulled highest first: ``high``, ``normal`` (the default) and ``low``.
The level travels in the subject's queue token, because a JetStream consumer can only select
messages by subject: a ``high`` task of queue ``emails`` goes to
``<prefix>.task.emails~high.<task>`` (``low``: ``emails~low``), a ``normal`` one keeps the plain
subject. The task also carries ``Jetq-Priority: high`` or ``low`` (absent for ``normal``) so its
dead letter is replayed at its level. The Rust counterpart is ``jetq_contract::Priority``.

>>> Priority.HIGH == "high", queue_token("emails", "low"), split_queue_token("emails~high")
(True, 'emails~low', ('emails', <Priority.HIGH: 'high'>))
"""

from __future__ import annotations

import enum
import json
from typing import Optional, Tuple, Union

from .errors import InvalidPriority

__all__ = [
    "Priority",
    "PriorityLike",
    "PRIORITY",
    "LEVEL_SEPARATOR",
    "parse_priority",
    "queue_token",
    "split_queue_token",
]

#: The header repeating a non-``normal`` task's level (``high`` or ``low``).
PRIORITY = "Jetq-Priority"
#: Between a queue's name and its level in a subject token (``emails~high``); never part of a
#: name, so a level's token cannot be another queue.
LEVEL_SEPARATOR = "~"


class Priority(str, enum.Enum):
    """How urgent a task is within its queue; a ``str``, so ``Priority.HIGH == "high"``."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    def __str__(self) -> str:
        return self.value


#: What ``priority=`` accepts: a :class:`Priority` or its name.
PriorityLike = Union[Priority, str]


def _quoted(value: object) -> str:
    # The Rust producer quotes the value with Debug formatting; JSON's quoting is the same for
    # every printable value (quotes and backslashes escaped, other characters as they are).
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def parse_priority(value: object) -> Priority:
    """The level named by ``value`` (a :class:`Priority`, or ``"high"``, ``"normal"`` or
    ``"low"`` exactly); ``None`` is ``normal``.

    :raises InvalidPriority: anything else, with the reason every jetq producer gives
    """
    if value is None:
        return Priority.NORMAL
    if isinstance(value, Priority):
        return value
    if isinstance(value, str):
        for level in Priority:
            if value == level.value:
                return level
    raise InvalidPriority(
        value, f'unknown priority {_quoted(value)}: the levels are "high", "normal" and "low"'
    )


def queue_token(queue: str, level: PriorityLike) -> str:
    """The subject token of ``queue`` at ``level``: the queue itself for ``normal``,
    ``<queue>~<level>`` otherwise."""
    parsed = parse_priority(level)
    if parsed is Priority.NORMAL:
        return queue
    return f"{queue}{LEVEL_SEPARATOR}{parsed.value}"


def split_queue_token(token: str) -> Optional[Tuple[str, Priority]]:
    """A subject's queue token split into the queue and its level; None for a level suffix that
    does not exist (``~urgent``, ``~normal``: such a subject belongs to no consumer)."""
    queue, separator, level = token.partition(LEVEL_SEPARATOR)
    if not separator:
        return token, Priority.NORMAL
    if queue and level in (Priority.HIGH.value, Priority.LOW.value):
        return queue, Priority(level)
    return None
