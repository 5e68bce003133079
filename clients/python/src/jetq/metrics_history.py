"""Metrics history (docs/PROTOCOL.md §15): per-minute aggregates of each queue for 24 hours.

jetq workers count what they run and merge their counts once a minute into the KV bucket
``<PREFIX>_METRICS`` under ``<queue>.<minute>`` (``minute`` = whole minutes since the Unix
epoch, UTC). :func:`metrics_history` reads them::

    import datetime, nats, jetq

    nc = await nats.connect("nats://127.0.0.1:4222")
    for minute in await jetq.metrics_history(nc, queue="emails", since=datetime.timedelta(hours=6)):
        print(minute.minute, minute.succeeded, minute.failed, minute.dead, minute.run_ms_quantile(0.95))

:meth:`MinuteRecord.merge` is the rule every writer applies (counts add up, maxima and depth
samples keep the larger), so a writer in Python merges exactly as the Rust workers do.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import time
from typing import Any, Dict, List, Optional, Tuple

from nats.aio.client import Client as NatsClient

from .protocol import Subjects, parse_timestamp

logger = logging.getLogger("jetq")

#: Upper bounds (milliseconds, inclusive) of the run-time buckets; one overflow bucket follows.
RUN_MS_BOUNDS = (10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000)

#: How long records are kept: 24 hours plus a margin of one hour.
RETENTION = datetime.timedelta(hours=25)

__all__ = [
    "RETENTION",
    "RUN_MS_BOUNDS",
    "MinuteRecord",
    "bucket_index",
    "metrics_bucket",
    "metrics_history",
    "minute_key",
    "minute_of",
    "parse_key",
    "parse_record",
]

_COUNTS = ("succeeded", "failed", "retried", "dead", "runs", "run_ms_sum")


@dataclasses.dataclass
class MinuteRecord:
    """One queue's minute: what the workers ran in it and the queue's depth."""

    queue: str
    minute: int
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    dead: int = 0
    runs: int = 0
    run_ms_sum: int = 0
    run_ms_max: int = 0
    run_ms_buckets: List[int] = dataclasses.field(default_factory=list)
    pending: Optional[int] = None
    in_flight: Optional[int] = None
    updated_at: str = ""

    @property
    def key(self) -> str:
        """``<queue>.<minute>``."""
        return minute_key(self.queue, self.minute)

    @property
    def start(self) -> datetime.datetime:
        """When the minute starts (UTC)."""
        return datetime.datetime.fromtimestamp(self.minute * 60, tz=datetime.timezone.utc)

    def merge(self, other: "MinuteRecord") -> None:
        """Merges another writer's counts of the same minute (commutative and associative)."""
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.run_ms_max = max(self.run_ms_max, other.run_ms_max)
        if len(self.run_ms_buckets) < len(other.run_ms_buckets):
            self.run_ms_buckets.extend([0] * (len(other.run_ms_buckets) - len(self.run_ms_buckets)))
        for index, count in enumerate(other.run_ms_buckets):
            self.run_ms_buckets[index] += count
        self.pending = _max_sample(self.pending, other.pending)
        self.in_flight = _max_sample(self.in_flight, other.in_flight)
        if _later(other.updated_at, self.updated_at):
            self.updated_at = other.updated_at

    def run_ms_mean(self) -> Optional[int]:
        """Mean run time in milliseconds (``None`` without runs)."""
        return self.run_ms_sum // self.runs if self.runs else None

    def run_ms_quantile(self, q: float) -> Optional[int]:
        """Estimate of the ``q`` quantile of the run times: the upper bound of the bucket that
        holds it, at most ``run_ms_max`` (``None`` without runs)."""
        total = sum(self.run_ms_buckets)
        if total == 0:
            return None
        rank = max(1, math.ceil(min(max(q, 0.0), 1.0) * total))
        seen = 0
        for index, count in enumerate(self.run_ms_buckets):
            seen += count
            if seen >= rank:
                bound = RUN_MS_BOUNDS[index] if index < len(RUN_MS_BOUNDS) else self.run_ms_max
                return min(bound, self.run_ms_max)
        return self.run_ms_max

    def to_json(self) -> Dict[str, Any]:
        """The record as it is stored (compact JSON object)."""
        value = dataclasses.asdict(self)
        for name in ("pending", "in_flight"):
            if value[name] is None:
                del value[name]
        return value


def _max_sample(a: Optional[int], b: Optional[int]) -> Optional[int]:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _parsed(text: str) -> Optional[datetime.datetime]:
    try:
        return parse_timestamp(text) if text else None
    except ValueError:
        return None


def _later(a: str, b: str) -> bool:
    parsed_a, parsed_b = _parsed(a), _parsed(b)
    if parsed_a is None:
        return False
    return parsed_b is None or parsed_a > parsed_b


def metrics_bucket(subjects: Subjects) -> str:
    """``<PREFIX>_METRICS`` (``JETQ_METRICS`` by default)."""
    return subjects.status_bucket[: -len("_STATUS")] + "_METRICS"


def minute_key(queue: str, minute: int) -> str:
    """``<queue>.<minute>``."""
    return f"{queue}.{minute}"


def parse_key(key: str) -> Optional[Tuple[str, int]]:
    """``(queue, minute)`` of a key, ``None`` when it is not ``<queue>.<minute>``."""
    queue, dot, minute = key.partition(".")
    if not dot or not queue or not minute or not (minute.isascii() and minute.isdigit()):
        return None
    return queue, int(minute)


def minute_of(at: datetime.datetime) -> int:
    """Whole minutes since the Unix epoch of an aware datetime."""
    return int(at.timestamp()) // 60


def bucket_index(ms: int) -> int:
    """The run-time bucket of an attempt that ran ``ms`` milliseconds."""
    for index, bound in enumerate(RUN_MS_BOUNDS):
        if ms <= bound:
            return index
    return len(RUN_MS_BOUNDS)


def parse_record(raw: bytes) -> Optional[MinuteRecord]:
    """A record from its stored JSON; ``None`` if it does not parse (unknown fields ignored)."""
    try:
        value: Dict[str, Any] = json.loads(raw)
        record = MinuteRecord(queue=str(value["queue"]), minute=int(value["minute"]))
        for name in _COUNTS + ("run_ms_max",):
            setattr(record, name, int(value.get(name, 0)))
        record.run_ms_buckets = [int(c) for c in value.get("run_ms_buckets") or []]
        for name in ("pending", "in_flight"):
            if value.get(name) is not None:
                setattr(record, name, int(value[name]))
        record.updated_at = str(value.get("updated_at", ""))
        return record
    except (ValueError, KeyError, TypeError) as err:
        logger.debug("jetq: unreadable metrics record: %s", err)
        return None


async def metrics_history(
    nc: NatsClient,
    queue: Optional[str] = None,
    since: datetime.timedelta = datetime.timedelta(hours=1),
    prefix: str = "jetq",
) -> List[MinuteRecord]:
    """The per-minute records of ``queue`` (every queue with ``None``) of the last ``since``
    (the current minute included), sorted by queue then minute; none when the bucket does not
    exist (no worker with history ran here)."""
    if queue is not None:
        from .names import validate_name

        validate_name("queue", queue)
    js = nc.jetstream()
    try:
        kv = await js.key_value(metrics_bucket(Subjects(prefix)))
    except Exception as err:
        logger.debug("jetq: no metrics history bucket: %s", err)
        return []
    first = int(time.time() - since.total_seconds()) // 60 + 1
    watcher = await kv.watch(f"{queue}.*" if queue else "*.*", ignore_deletes=True)
    records: List[MinuteRecord] = []
    try:
        while True:
            entry = await watcher.updates(timeout=10.0)  # type: ignore[no-untyped-call]
            if entry is None:
                break
            parsed = parse_key(entry.key)
            if parsed is None or parsed[1] < first or entry.value is None:
                continue
            record = parse_record(entry.value)
            if record is not None and (record.queue, record.minute) == parsed:
                records.append(record)
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    records.sort(key=lambda r: (r.queue, r.minute))
    return records
