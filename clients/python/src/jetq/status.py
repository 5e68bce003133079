"""Task status records (docs/PROTOCOL.md §8, docs/STATUS.md): what a tracked task is doing, kept
in the KV bucket ``<PREFIX>_STATUS`` by the Rust workers.

Tracking is opt-in: ``enqueue(..., track_status=True)`` sends ``Jetq-Track-Status: 1`` and writes
the ``queued`` record after the publish ack (or the worker's task type opts in). Then
``status(id)`` reads the record, ``wait(id, timeout)`` waits for a terminal state through a KV
watch (the server pushes each change; nothing polls), ``watch(id)`` yields every change and
``cancel(id)`` cancels the task — all as the Rust producer does.

This module holds the I/O-free part: the key encoding, the record type and the changes the
producer writes. :class:`StatusStore` does the KV reads and writes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import logging
import time
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple

import nats
from nats.js import JetStreamContext
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy, DiscardPolicy, StorageType, StreamConfig
from nats.js.kv import KeyValue

from .errors import (
    StatusCorrupt,
    StatusNotFound,
    StatusReadError,
    StatusUnavailable,
    StatusWriteError,
    WaitTimeout,
)
from .protocol import Subjects, format_timestamp, same_instant

__all__ = [
    "TaskState",
    "TaskStatus",
    "Progress",
    "Transition",
    "ArtifactInfo",
    "CancelOutcome",
    "status_key",
    "id_from_key",
    "queued_record",
    "StatusStore",
]

logger = logging.getLogger("jetq")

#: Compare-and-set rounds before a status write gives up (as the Rust producer).
CAS_ROUNDS = 8
#: After the bucket could not be opened, it is not tried again for this long (seconds).
REOPEN_AFTER = 30.0
#: Seconds after which the server removes the consumer of an abandoned watch.
WATCH_INACTIVE_THRESHOLD = 30.0
#: Transitions kept in a record.
MAX_TRANSITIONS = 50

# The record's fields in the order the Rust side writes them.
_FIELD_ORDER = (
    "id", "queue", "task", "state", "sequence", "attempt", "max_attempts", "enqueued_at",
    "started_at", "finished_at", "updated_at", "next_attempt_at", "progress", "result", "error",
    "dead_reason", "artifacts", "cancel_requested_at", "transitions",
)  # fmt: skip


class TaskState(str, enum.Enum):
    """Where a tracked task is in its life; the last four are terminal."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for the states no writer replaces.

        >>> TaskState.SUCCEEDED.is_terminal, TaskState.RETRYING.is_terminal
        (True, False)
        """
        return self in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.DEAD, TaskState.CANCELLED)

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class Progress:
    """The handler's last progress report."""

    percent: float
    message: str
    at: str


@dataclasses.dataclass(frozen=True)
class Transition:
    """One state change of :attr:`TaskStatus.transitions`."""

    state: TaskState
    attempt: int
    at: str
    error: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class ArtifactInfo:
    """An artifact the handler stored in the object store (object ``<task id>/<name>``)."""

    name: str
    size: int
    digest: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class TaskStatus:
    """The status record of one tracked task. Timestamps are RFC 3339 UTC strings as on the
    wire (:func:`jetq.protocol.parse_timestamp` reads them); :attr:`raw` is the whole JSON
    object, fields this version does not know included."""

    id: str
    queue: str
    task: str
    state: TaskState
    updated_at: str
    attempt: int = 0
    sequence: Optional[int] = None
    max_attempts: Optional[int] = None
    enqueued_at: Optional[str] = None
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    next_attempt_at: Optional[str] = None
    progress: Optional[Progress] = None
    result: Any = None
    error: Optional[str] = None
    dead_reason: Optional[str] = None
    artifacts: Tuple[ArtifactInfo, ...] = ()
    cancel_requested_at: Optional[str] = None
    transitions: Tuple[Transition, ...] = ()
    raw: Dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def is_terminal(self) -> bool:
        """True once the task is over (succeeded, failed, dead, cancelled)."""
        return self.state.is_terminal

    @classmethod
    def from_json(cls, data: bytes) -> "TaskStatus":
        """Parses a stored record; raises ``ValueError`` when it is not one."""
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("the record is not a JSON object")
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> "TaskStatus":
        """A record from its JSON object; raises ``ValueError`` when a field has the wrong type."""

        def text(name: str, required: bool = False) -> Optional[str]:
            value = raw.get(name)
            if value is None and not required:
                return None
            if not isinstance(value, str):
                raise ValueError(f"field {name!r} is not a string: {value!r}")
            return value

        def integer(name: str) -> Optional[int]:
            value = raw.get(name)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"field {name!r} is not a non-negative integer: {value!r}")
            return value

        try:
            state = TaskState(raw.get("state"))
        except ValueError:
            raise ValueError(f"unknown state {raw.get('state')!r}") from None
        progress = None
        if raw.get("progress") is not None:
            p = raw["progress"]
            if not isinstance(p, dict) or not isinstance(p.get("percent"), (int, float)):
                raise ValueError(f"field 'progress' is malformed: {p!r}")
            progress = Progress(float(p["percent"]), str(p.get("message", "")), str(p.get("at", "")))
        transitions = []
        for item in raw.get("transitions") or []:
            if not isinstance(item, dict):
                raise ValueError(f"a transition is not an object: {item!r}")
            transitions.append(
                Transition(
                    state=TaskState(item.get("state")),
                    attempt=int(item.get("attempt", 0)),
                    at=str(item.get("at", "")),
                    error=item.get("error"),
                )
            )
        artifacts = []
        for item in raw.get("artifacts") or []:
            if not isinstance(item, dict):
                raise ValueError(f"an artifact is not an object: {item!r}")
            artifacts.append(ArtifactInfo(str(item.get("name", "")), int(item.get("size", 0)), item.get("digest")))
        return cls(
            id=text("id", True) or "",
            queue=text("queue", True) or "",
            task=text("task", True) or "",
            state=state,
            updated_at=text("updated_at", True) or "",
            attempt=integer("attempt") or 0,
            sequence=integer("sequence"),
            max_attempts=integer("max_attempts"),
            enqueued_at=text("enqueued_at"),
            started_at=text("started_at"),
            finished_at=text("finished_at"),
            next_attempt_at=text("next_attempt_at"),
            progress=progress,
            result=raw.get("result"),
            error=text("error"),
            dead_reason=text("dead_reason"),
            artifacts=tuple(artifacts),
            cancel_requested_at=text("cancel_requested_at"),
            transitions=tuple(transitions),
            raw=raw,
        )


@dataclasses.dataclass(frozen=True)
class CancelOutcome:
    """What ``cancel`` did: :attr:`outcome` is

    - ``"cancelled"``: the task had not started (queued, or waiting to retry); it is now
      ``cancelled`` and the worker that pulls it drops it without running it;
    - ``"requested"``: the task is running; its handler is told and the task ends ``cancelled``
      when the handler returns (``wait`` reports that end);
    - ``"already_finished"``: it was over; nothing changed.
    """

    outcome: str
    status: TaskStatus

    @property
    def cancelled(self) -> bool:
        return self.outcome == "cancelled"

    @property
    def requested(self) -> bool:
        return self.outcome == "requested"

    @property
    def already_finished(self) -> bool:
        return self.outcome == "already_finished"


_KEPT = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def status_key(id: str) -> str:
    """The status-bucket key of a task id (docs/PROTOCOL.md §8): bytes of ``[A-Za-z0-9_-]``
    kept, every other byte ``=`` plus two upper-case hex digits, the empty id ``=``.

    >>> status_key("01J9ZQ5W3V7ZB4M8K2N6P0R1S3"), status_key("signup:ada@example.com"), status_key("a=b.c")
    ('01J9ZQ5W3V7ZB4M8K2N6P0R1S3', 'signup=3Aada=40example=2Ecom', 'a=3Db=2Ec')
    """
    if id == "":
        return "="
    return "".join(chr(b) if b in _KEPT else f"={b:02X}" for b in id.encode("utf-8"))


def id_from_key(key: str) -> Optional[str]:
    """The task id of a key made by :func:`status_key`; None for anything else.

    >>> id_from_key("signup=3Aada=40example=2Ecom")
    'signup:ada@example.com'
    """
    if key == "=":
        return ""
    out = bytearray()
    i = 0
    while i < len(key):
        char = key[i]
        if char == "=":
            digits = key[i + 1 : i + 3]
            if len(digits) != 2 or not all(c in "0123456789ABCDEF" for c in digits):
                return None
            out.append(int(digits, 16))
            i += 3
        elif char.isascii() and ord(char) in _KEPT:
            out.append(ord(char))
            i += 1
        else:
            return None
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _ordered(raw: Dict[str, Any]) -> Dict[str, Any]:
    """The record's fields in the Rust side's order, unknown fields after them (kept)."""
    out = {name: raw[name] for name in _FIELD_ORDER if name in raw}
    out.update((name, value) for name, value in raw.items() if name not in out)
    return out


def encode_record(raw: Dict[str, Any]) -> bytes:
    """A record as stored: compact UTF-8 JSON."""
    return json.dumps(_ordered(raw), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def queued_record(id: str, queue: str, task: str, sequence: Optional[int], enqueued_at: Optional[str]) -> Dict[str, Any]:
    """The ``queued`` record the producer writes after a tracked task's publish ack (no
    ``sequence`` for a delayed task, whose ack is the delayed stream's)."""
    now = format_timestamp()
    raw: Dict[str, Any] = {"id": id, "queue": queue, "task": task, "state": "queued"}
    if sequence is not None:
        raw["sequence"] = sequence
    raw["attempt"] = 0
    if enqueued_at is not None:
        raw["enqueued_at"] = enqueued_at
    raw["updated_at"] = now
    raw["transitions"] = [{"state": "queued", "attempt": 0, "at": now}]
    return raw


def enter(raw: Dict[str, Any], state: TaskState) -> Dict[str, Any]:
    """A copy of ``raw`` moved to ``state`` now, as the Rust ``TaskStatus::enter`` does: the
    transition appended (the last 50 kept), ``updated_at`` stamped, ``finished_at`` for a terminal
    state, ``next_attempt_at`` dropped unless retrying."""
    now = format_timestamp()
    out = dict(raw)
    out["state"] = state.value
    out["updated_at"] = now
    if state is not TaskState.RETRYING:
        out.pop("next_attempt_at", None)
    if state.is_terminal:
        out["finished_at"] = now
    transitions = list(out.get("transitions") or [])
    transitions.append({"state": state.value, "attempt": out.get("attempt", 0), "at": now})
    out["transitions"] = transitions[-MAX_TRANSITIONS:]
    return out


def _reason(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class StatusStore:
    """The status bucket of one producer, opened on first use (and created, with the artifact
    store, if missing and ``provision`` is on), as the Rust producer's ``StatusStores``."""

    def __init__(
        self,
        js: JetStreamContext,
        subjects: Subjects,
        *,
        provision: bool,
        ttl: float,
        replicas: int,
        artifacts_max_bytes: int,
    ) -> None:
        self._js = js
        self._subjects = subjects
        self._provision = provision
        self._ttl = ttl
        self._replicas = replicas
        self._artifacts_max_bytes = artifacts_max_bytes
        self._kv: Optional[KeyValue] = None
        self._failed: Optional[Tuple[float, str]] = None
        self._lock = asyncio.Lock()

    @property
    def bucket(self) -> str:
        return self._subjects.status_bucket

    def status_stream_config(self) -> StreamConfig:
        """The KV bucket's stream, exactly as the Rust side's ``create_or_update_key_value``
        writes it (history 1, max age ``JETQ_STATUS_TTL``), so either side may create it."""
        bucket = self.bucket
        return StreamConfig(
            name=f"KV_{bucket}",
            description="jetq: status, progress and results of tracked tasks",
            subjects=[f"$KV.{bucket}.>"],
            max_msgs_per_subject=1,
            max_age=self._ttl,
            storage=StorageType.FILE,
            allow_rollup_hdrs=True,
            deny_delete=True,
            deny_purge=False,
            allow_direct=True,
            num_replicas=self._replicas,
            discard=DiscardPolicy.NEW,
        )

    def artifacts_stream_config(self) -> StreamConfig:
        """The artifact object store's stream, as the Rust side writes it."""
        bucket = self._subjects.artifacts_bucket
        return StreamConfig(
            name=f"OBJ_{bucket}",
            description="jetq: artifacts of tracked tasks",
            subjects=[f"$O.{bucket}.C.>", f"$O.{bucket}.M.>"],
            max_age=self._ttl,
            max_bytes=self._artifacts_max_bytes,
            storage=StorageType.FILE,
            num_replicas=self._replicas,
            discard=DiscardPolicy.NEW,
            allow_rollup_hdrs=True,
            allow_direct=True,
        )

    async def _create(self) -> None:
        for config in (self.status_stream_config(), self.artifacts_stream_config()):
            try:
                await self._js.add_stream(config)
            except nats.js.errors.BadRequestError as err:
                # 10058: the stream exists (another producer or a worker was faster): fine.
                if err.err_code != 10058:
                    raise

    async def kv(self, *, for_enqueue: bool = False) -> KeyValue:
        """The bucket; :class:`~jetq.errors.StatusUnavailable` if it is missing and cannot be
        created. After such a failure, enqueues (``for_enqueue``) do not try again for 30 s, so
        a producer without the bucket pays no lookup per tracked enqueue; explicit calls
        (status, wait, watch, cancel) always look again, since a worker or ``jetq-provision``
        may have created it since (as the Rust producer)."""
        if self._kv is not None:
            return self._kv
        if for_enqueue and self._failed is not None and time.monotonic() < self._failed[0]:
            raise StatusUnavailable(self.bucket, f"{self._failed[1]} (tried again in at most {REOPEN_AFTER:g}s)")
        async with self._lock:
            if self._kv is not None:
                return self._kv
            try:
                try:
                    self._kv = await self._js.key_value(self.bucket)
                except nats.js.errors.BucketNotFoundError:
                    if not self._provision:
                        raise StatusUnavailable(self.bucket, "the bucket does not exist (JETQ_PROVISION=false)") from None
                    await self._create()
                    self._kv = await self._js.key_value(self.bucket)
                self._failed = None
            except StatusUnavailable as err:
                self._failed = (time.monotonic() + REOPEN_AFTER, err.reason)
                raise
            except Exception as err:  # permissions, timeouts, a broken connection
                self._failed = (time.monotonic() + REOPEN_AFTER, _reason(err))
                raise StatusUnavailable(self.bucket, _reason(err)) from err
            return self._kv

    async def entry(self, id: str) -> Tuple[Optional[Dict[str, Any]], int]:
        """The raw record of ``id`` (None if there is none) and the revision to update."""
        kv = await self.kv()
        try:
            entry = await kv.get(status_key(id))
        except nats.js.errors.KeyNotFoundError as err:
            deleted = getattr(err, "entry", None)
            revision = getattr(deleted, "revision", None)
            return None, int(revision) if isinstance(revision, int) else 0
        except Exception as err:
            raise StatusReadError(id, _reason(err)) from err
        try:
            raw = json.loads(entry.value or b"")
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
        except ValueError as err:
            raise StatusCorrupt(id, str(err)) from None
        return raw, int(entry.revision or 0)

    async def status(self, id: str) -> Optional[TaskStatus]:
        raw, _ = await self.entry(id)
        return None if raw is None else _decode(id, raw)

    async def _update(self, id: str, raw: Dict[str, Any], revision: int) -> bool:
        """Compare-and-set; False when someone else wrote first."""
        kv = await self.kv()
        try:
            await kv.update(status_key(id), encode_record(raw), last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        except Exception as err:
            raise StatusWriteError(id, _reason(err)) from err
        return True

    async def write_queued(
        self, id: str, queue: str, task: str, sequence: Optional[int], enqueued_at: Optional[str]
    ) -> None:
        """Writes the ``queued`` record of a freshly enqueued tracked task, unless a worker is
        already ahead (the record carries this task's sequence, or — for a delayed task — a
        released copy of this very enqueue)."""
        record = queued_record(id, queue, task, sequence, enqueued_at)
        await self.kv(for_enqueue=True)
        for _ in range(CAS_ROUNDS):
            try:
                existing, revision = await self.entry(id)
            except StatusCorrupt:
                existing, revision = None, await self._revision(id)
            if existing is not None:
                known = existing.get("sequence")
                known = known if isinstance(known, int) and not isinstance(known, bool) else None
                if sequence is not None:
                    worker_ahead = known is not None and known >= sequence
                else:
                    # Compared as instants: the worker may write another accepted form.
                    worker_ahead = known is not None and same_instant(existing.get("enqueued_at"), enqueued_at)
                if worker_ahead:
                    return
            if await self._update(id, record, revision):
                return
        raise StatusWriteError(id, "the record kept changing while it was written")

    async def _revision(self, id: str) -> int:
        kv = await self.kv()
        try:
            entry = await kv.get(status_key(id))
        except nats.js.errors.KeyNotFoundError as err:
            revision = getattr(getattr(err, "entry", None), "revision", None)
            return int(revision) if isinstance(revision, int) else 0
        return int(entry.revision or 0)

    async def cancel(self, id: str) -> CancelOutcome:
        for _ in range(CAS_ROUNDS):
            raw, revision = await self.entry(id)
            if raw is None:
                raise StatusNotFound(id)
            status = _decode(id, raw)
            if status.is_terminal:
                return CancelOutcome("already_finished", status)
            running = status.state is TaskState.RUNNING
            if running:
                if status.cancel_requested_at is not None:
                    return CancelOutcome("requested", status)
                now = format_timestamp()
                changed = dict(raw)
                changed["cancel_requested_at"] = now
                changed["updated_at"] = now
            else:
                changed = enter(raw, TaskState.CANCELLED)
            if await self._update(id, changed, revision):
                return CancelOutcome("requested" if running else "cancelled", _decode(id, changed))
            # A worker wrote in between (it started, progressed or finished): look again.
        raise StatusWriteError(id, "the record kept changing while the cancellation was written")

    async def watch(self, id: str) -> AsyncIterator[TaskStatus]:
        """The current record (if any), then every change, ending after a terminal state.

        An ordered push consumer on ``KV_<bucket>`` filtered to the key's subject, last value
        first — what a KV watch is, without the consumer-info request nats-py's ``kv.watch``
        makes, so a least-privilege producer user (k8s/nats/permissions.conf: consumer create
        and flow control only) can wait and watch."""
        await self.kv()
        bucket = self.bucket
        updates: "asyncio.Queue[Msg]" = asyncio.Queue()

        async def on_message(msg: Msg) -> None:
            await updates.put(msg)

        try:
            subscription = await self._js.subscribe(
                f"$KV.{bucket}.{status_key(id)}",
                stream=f"KV_{bucket}",
                cb=on_message,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                inactive_threshold=WATCH_INACTIVE_THRESHOLD,
            )
        except Exception as err:
            raise StatusReadError(id, _reason(err)) from err
        try:
            while True:
                msg = await updates.get()
                headers = msg.headers or {}
                # A delete or purge (or a 2.11+ expiry marker): no record to report.
                if headers.get("KV-Operation") in ("DEL", "PURGE") or "Nats-Marker-Reason" in headers:
                    continue
                try:
                    status = TaskStatus.from_json(msg.data or b"")
                except ValueError as err:
                    raise StatusCorrupt(id, str(err)) from None
                yield status
                if status.is_terminal:
                    return
        finally:
            try:
                await subscription.unsubscribe()
            except Exception:  # the connection may be gone; the server drops the consumer
                logger.debug("jetq: error while stopping a status watch", exc_info=True)

    async def wait(self, id: str, timeout: float) -> TaskStatus:
        last: List[TaskStatus] = []

        async def follow() -> TaskStatus:
            updates = self.watch(id)
            try:
                async for status in updates:
                    if status.is_terminal:
                        return status
                    last[:] = [status]
            finally:
                await updates.aclose()  # type: ignore[attr-defined]
            raise StatusNotFound(id)  # pragma: no cover - the watch ends only after a terminal record

        try:
            return await asyncio.wait_for(follow(), timeout=timeout)
        except asyncio.TimeoutError:
            raise WaitTimeout(id, timeout, last[0] if last else None) from None


def _decode(id: str, raw: Dict[str, Any]) -> TaskStatus:
    try:
        return TaskStatus.from_dict(raw)
    except (ValueError, TypeError) as err:
        raise StatusCorrupt(id, str(err)) from None

