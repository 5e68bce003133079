"""The producer's view of the task-type catalog (docs/PROTOCOL.md, "Task-type catalog"): what
the workers handling a type published about it, read from the ``<PREFIX>_CATALOG`` KV bucket
(key ``<queue>.<task>``) and cached for a short time, so that a type its workers track is
tracked without the caller passing ``track_status=True``.

Lookups never fail: a missing bucket, a missing entry, a user not allowed to read it or a value
that is not an entry all mean "unknown", and an unknown type is enqueued exactly as before.
Answers, "unknown" included, are cached for :data:`DEFAULT_TTL` seconds, as in the Rust
producer (producer/src/catalog.rs)."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any, Dict, Optional, Tuple

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from .protocol import Subjects

__all__ = ["Catalog", "CatalogEntry", "DEFAULT_TTL", "catalog_bucket", "catalog_key", "parse_entry"]

logger = logging.getLogger("jetq")

#: Seconds an answer (also "unknown") is reused.
DEFAULT_TTL = 30.0


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
    """One task type as its workers run it: the value of the catalog entry ``<queue>.<task>``."""

    queue: str
    task: str
    max_attempts: int
    timeout_ms: int
    tracked: bool
    updated_at: str

    @property
    def key(self) -> str:
        """Its key in the catalog bucket."""
        return catalog_key(self.queue, self.task)

    def to_json(self) -> bytes:
        """The value as a worker writes it: compact JSON in the Rust field order."""
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def catalog_bucket(subjects: Subjects) -> str:
    """The catalog bucket of a prefix: ``<PREFIX>_CATALOG`` (``JETQ_CATALOG`` by default)."""
    # Named from the upper-case prefix as the status bucket is.
    return subjects.status_bucket[: -len("_STATUS")] + "_CATALOG"


def catalog_key(queue: str, task: str) -> str:
    """The catalog key of a task type: ``<queue>.<task>``."""
    return f"{queue}.{task}"


def _is_int(value: Any, limit: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit


def parse_entry(raw: bytes) -> Optional[CatalogEntry]:
    """The entry a value holds, or None when it is not one (not JSON, not an object, a field
    missing or of the wrong type). Unknown fields are ignored."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(value, dict):
        return None
    queue, task, updated_at = value.get("queue"), value.get("task"), value.get("updated_at")
    max_attempts, timeout_ms, tracked = value.get("max_attempts"), value.get("timeout_ms"), value.get("tracked")
    if not (isinstance(queue, str) and isinstance(task, str) and isinstance(updated_at, str)):
        return None
    if not (isinstance(max_attempts, int) and isinstance(timeout_ms, int) and isinstance(tracked, bool)):
        return None
    if not (_is_int(max_attempts, 2**32 - 1) and _is_int(timeout_ms, 2**64 - 1)):
        return None
    return CatalogEntry(queue, task, max_attempts, timeout_ms, tracked, updated_at)


class Catalog:
    """A cached reader of the task-type catalog of one prefix."""

    def __init__(self, js: JetStreamContext, subjects: Subjects, *, ttl: float = DEFAULT_TTL) -> None:
        self._js = js
        self.bucket = catalog_bucket(subjects)
        self.ttl = ttl
        self._kv: Optional[KeyValue] = None
        #: When the bucket was last found missing (monotonic seconds).
        self._missing_since: Optional[float] = None
        self._entries: Dict[str, Tuple[float, Optional[CatalogEntry]]] = {}

    def cached_tracked(self, queue: str, task: str) -> Optional[bool]:
        """The cached answer of :meth:`tracked` while fresh; None when the catalog must be read."""
        cached = self._entries.get(catalog_key(queue, task))
        if cached is None or time.monotonic() - cached[0] >= self.ttl:
            return None
        return cached[1] is not None and cached[1].tracked

    async def entry(self, queue: str, task: str) -> Optional[CatalogEntry]:
        """What the workers published about ``queue``/``task``, or None when nothing is known."""
        key = catalog_key(queue, task)
        cached = self._entries.get(key)
        if cached is not None and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        kv = await self._store()
        found = await self._read(kv, key) if kv is not None else None
        self._entries[key] = (time.monotonic(), found)
        return found

    async def tracked(self, queue: str, task: str) -> bool:
        """Whether the workers of ``queue``/``task`` track its status (False when unknown)."""
        found = await self.entry(queue, task)
        return found is not None and found.tracked

    async def _store(self) -> Optional[KeyValue]:
        if self._kv is not None:
            return self._kv
        if self._missing_since is not None and time.monotonic() - self._missing_since < self.ttl:
            return None
        try:
            self._kv = await self._js.key_value(self.bucket)
            self._missing_since = None
        except Exception as err:  # missing bucket, permissions, timeout: unknown
            logger.debug("jetq: no task-type catalog %s: %s", self.bucket, err)
            self._missing_since = time.monotonic()
        return self._kv

    async def _read(self, kv: KeyValue, key: str) -> Optional[CatalogEntry]:
        try:
            found = await kv.get(key)
        except Exception as err:  # missing or deleted entry, permissions, timeout: unknown
            logger.debug("jetq: catalog entry %s not readable: %s", key, err)
            return None
        if found.value is None:
            return None
        parsed = parse_entry(found.value)
        if parsed is None:
            logger.warning("jetq: catalog entry %s is not a task type: ignored", key)
        return parsed
