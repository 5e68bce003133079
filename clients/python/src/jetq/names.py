"""Validation of names and idempotency keys, exactly as the Rust producer does it.

A name is copied verbatim into a NATS subject (``<prefix>.task.<queue>.<task>``), so a ``.``
would add a token, and ``*``, ``>`` or whitespace would turn a publish subject into a wildcard
or break the protocol line. Such names are **rejected, never escaped** (docs/PROTOCOL.md §1).

The rejection reasons are the Rust producer's texts word for word; the shared test vectors in
``docs/conformance/vectors.json`` hold both producers to them.
"""

from __future__ import annotations

import re
from typing import Literal

from .errors import InvalidKey, InvalidName

__all__ = [
    "MAX_NAME_LEN",
    "MAX_KEY_LEN",
    "RESERVED_KEY_PREFIXES",
    "NameKind",
    "validate_name",
    "validate_key",
    "is_valid_name",
    "is_fire_id",
]

#: The longest queue, task or prefix name, in bytes.
MAX_NAME_LEN = 64
#: The longest idempotency key, in bytes.
MAX_KEY_LEN = 256

#: Task-id prefixes jetq writes itself (docs/PROTOCOL.md §3, "Reserved ids"): replays of dead
#: letters, released delayed tasks that had no id, dead letters. Refused at the start of a key.
RESERVED_KEY_PREFIXES = ("replay:", "delayed:", "dead:")

_FIRE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}:[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")

#: What a name is used for.
NameKind = Literal["queue", "task", "prefix"]

_ALLOWED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")

# Unicode's White_Space property: what Rust's ``char::is_whitespace`` tests. (Python's
# ``str.isspace`` also counts U+001C..U+001F, which would give a different reason.)
_WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def validate_name(kind: NameKind, value: str) -> None:
    """Raises :class:`~jetq.errors.InvalidName` unless ``value`` matches ``[A-Za-z0-9_-]{1,64}``.

    >>> validate_name("queue", "emails")
    >>> validate_name("task", "send.email")
    Traceback (most recent call last):
    ...
    jetq.errors.InvalidName: invalid task name 'send.email': '.' would split it into two subject tokens (allowed: 1-64 characters of A-Z a-z 0-9 _ -)
    """
    if not isinstance(value, str):
        raise InvalidName(kind, repr(value), "it is not a string")
    if value == "":
        raise InvalidName(kind, value, "it is empty")
    # The Rust producer measures bytes; so do we, so both give the same reason.
    if len(value.encode("utf-8")) > MAX_NAME_LEN:
        raise InvalidName(kind, value, "it is too long")
    for char in value:
        if char in _ALLOWED:
            continue
        if char == ".":
            raise InvalidName(kind, value, "'.' would split it into two subject tokens")
        if char in "*>":
            raise InvalidName(kind, value, "'*' and '>' are subject wildcards")
        if char in _WHITESPACE:
            raise InvalidName(kind, value, "whitespace is not allowed in subjects")
        raise InvalidName(kind, value, "it contains a character outside the allowed set")


def is_valid_name(value: str) -> bool:
    """True if ``value`` is usable as a queue, task or prefix name."""
    try:
        validate_name("queue", value)
    except InvalidName:
        return False
    return True


def validate_key(value: str) -> None:
    """Raises :class:`~jetq.errors.InvalidKey` unless ``value`` is 1-256 printable ASCII
    characters without spaces (``!`` to ``~``), so it survives as a header value in every NATS
    client unchanged, and none of the ids jetq reserves: a :data:`RESERVED_KEY_PREFIXES` prefix
    or the shape of a schedule's fire id (:func:`is_fire_id`).

    >>> validate_key("order-42:confirm")
    """
    if not isinstance(value, str):
        raise InvalidKey(repr(value), "it is not a string")
    if value == "":
        raise InvalidKey(value, "it is empty")
    if len(value.encode("utf-8")) > MAX_KEY_LEN:
        raise InvalidKey(value, "it is longer than 256 bytes")
    if not all("!" <= char <= "~" for char in value):
        raise InvalidKey(value, "only printable ASCII without spaces is allowed")
    if value.startswith(RESERVED_KEY_PREFIXES):
        raise InvalidKey(value, "it starts with a prefix jetq reserves (replay:, delayed:, dead:)")
    if is_fire_id(value):
        raise InvalidKey(value, "it has the form of a schedule's fire id (<name>:<YYYY-MM-DDTHH:MM:SSZ>)")


def is_fire_id(value: str) -> bool:
    """True if ``value`` has the shape of a periodic fire's id, ``<schedule>:<fire time>``
    (``nightly-report:2026-11-28T02:00:00Z``): such ids belong to the scheduler.

    >>> is_fire_id("nightly-report:2026-11-28T02:00:00Z"), is_fire_id("signup:ada@example.com")
    (True, False)
    """
    return _FIRE_ID.fullmatch(value) is not None
