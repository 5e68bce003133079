"""Batches, chords and chains from Python (docs/PROTOCOL.md §13, docs/WORKFLOWS.md).

The same records, keys, headers and ``Nats-Msg-Id`` s as the Rust producer
(``producer/src/producer/batch.rs``): a batch is enqueued in three steps — its record
``b.<id>`` is created in ``<PREFIX>_BATCHES`` (state ``enqueuing``, create-only), its members
are published with ``Jetq-Batch: <id>`` (in atomic batches of up to 1,000 on nats-server 2.12+,
one by one, pipelined, on older servers or when the stream refuses atomic publish), then the
record is closed (or left open). Workers count the members and fire the callbacks; the
producer fires them itself only when every member had already ended by the time it closed the
batch. A chain's record ``c.<id>`` is created and its first link published with
``Nats-Msg-Id: chain:<id>:0``.

::

    batch = Batch(producer, id="export-42", chord=True)
    batch.add("exports", "chunk", {"rows": [0, 1000]}, key="export-42-0")
    batch.on_success("exports", "assemble", {"export": 42})
    handle = await batch.enqueue()
    status = await batch_status(producer, handle.id)

    chain = Chain().then("exports", "build", {"export": 42}).then_with_previous("emails", "mail", {"to": "ada@example.com"})
    started = await enqueue_chain(producer, chain)
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import weakref
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import nats
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.kv import KeyValue

from .errors import EnqueueError, JetqError
from .protocol import ENQUEUED_AT, MSG_ID, TRACEPARENT, TRACESTATE, TRACK_STATUS, Prepared, Subjects, format_timestamp, new_ulid
from .status import id_from_key, status_key
from .tracing import current_trace_context
from .workflow_results import LINKS_HEADER, chord_result, links_header

if TYPE_CHECKING:
    from .producer import AsyncProducer, Enqueued

__all__ = [
    "BATCH_HEADER",
    "CHAIN_HEADER",
    "Batch",
    "BatchExists",
    "BatchHandle",
    "BatchStatus",
    "Chain",
    "ChainExists",
    "ChainHandle",
    "ChainStatus",
    "InvalidWorkflow",
    "MembersNotEnqueued",
    "Member",
    "UnknownCallback",
    "WorkflowStoreError",
    "batch_add",
    "batch_close",
    "batch_status",
    "batch_retry_members",
    "callback_body",
    "callback_id",
    "chain_body",
    "chain_status",
    "chord_result",
    "enqueue_chain",
    "link_header",
    "link_id",
    "marker_key",
    "member_id",
    "record_key",
    "chain_key",
    "validate_id",
    "workflow_bucket",
]

logger = logging.getLogger("jetq")

#: Header: the batch a task is a member of.
BATCH_HEADER = "Jetq-Batch"
#: Header: ``<chain id>:<index>`` on a chain's link.
CHAIN_HEADER = "Jetq-Chain"
#: Records live this long after their last write (the bucket's ``max_age``): 7 days.
MAX_AGE = 7 * 24 * 3600.0
#: Most members sent in one atomic batch (the server accepts 1,000).
MAX_ATOMIC = 1000
#: Results of a chord inlined in a callback, in bytes of JSON at most.
MAX_INLINE_RESULTS = 256 * 1024
_CAS_ROUNDS = 50
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ATOMIC_DISABLED = 10174


# ---------------------------------------------------------------------------------------------
# Errors (the Rust producer's EnqueueError variants of the same names)


class InvalidWorkflow(EnqueueError, ValueError):
    """A batch or chain id outside ``[A-Za-z0-9_-]{1,64}``, callback arguments that are not a
    JSON object, an invalid chain (no link, a first link taking a previous result, ...).
    Nothing was sent or stored."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BatchExists(EnqueueError):
    """A batch with this id exists (open or closed): nothing was enqueued."""

    def __init__(self, id: str) -> None:
        super().__init__(f"batch {id} exists")
        self.id = id


class ChainExists(EnqueueError):
    """A chain with this id exists: nothing was enqueued."""

    def __init__(self, id: str) -> None:
        super().__init__(f"chain {id} exists")
        self.id = id


class UnknownCallback(EnqueueError):
    """A callback whose ``<queue>.<task>`` has no entry in the task-type catalog: no worker
    handles it. Pass ``skip_callback_check=True`` when its workers are deployed later."""

    def __init__(self, queue: str, task: str) -> None:
        super().__init__(f"no worker handles callback {queue}.{task} (not in the task-type catalog)")
        self.queue = queue
        self.task = task


class MembersNotEnqueued(EnqueueError):
    """Some members of a batch could not be enqueued (the others are queued): enqueue the batch
    again with the same id and member keys, or :func:`batch_retry_members`."""

    def __init__(self, id: str, failed: int, first: EnqueueError) -> None:
        super().__init__(f"{failed} member(s) of batch {id} not enqueued; first: {first}")
        self.id = id
        self.failed = failed
        self.first = first


class WorkflowStoreError(EnqueueError):
    """The workflow bucket (``<PREFIX>_BATCHES``) could not be read or written (Rust:
    ``EnqueueError::Workflow``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"batch or chain bookkeeping failed: {reason}")
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# Names, keys, bodies (pure; docs/conformance/workflows.json)


def workflow_bucket(subjects: Subjects) -> str:
    """``<PREFIX>_BATCHES``: ``JETQ_BATCHES`` for the default prefix."""
    return subjects.status_bucket[: -len("_STATUS")] + "_BATCHES"


def validate_id(what: str, id: str) -> None:
    """Raises :class:`InvalidWorkflow` unless ``id`` is ``[A-Za-z0-9_-]{1,64}``."""
    if not isinstance(id, str) or not _ID.match(id):
        raise InvalidWorkflow(
            f"invalid {what} id {id!r}: 1 to 64 characters of A-Z, a-z, 0-9, _ and - are allowed"
        )


def record_key(batch: str) -> str:
    """``b.<batch id>``."""
    return f"b.{batch}"


def marker_key(batch: str, member: str) -> str:
    """``m.<batch id>.<member id encoded as a status key>``."""
    return f"m.{batch}.{status_key(member)}"


def chain_key(chain: str) -> str:
    """``c.<chain id>``."""
    return f"c.{chain}"


def member_id(task_id: str) -> str:
    """The member id of a task id: the original task's id for a replay
    (``replay:<seq>:<task id>``)."""
    if task_id.startswith("replay:"):
        _, sep, original = task_id[len("replay:") :].partition(":")
        if sep and original:
            return original
    return task_id


def child_member_id(child: str) -> str:
    """The member id of a nested batch in its parent: ``batch:<child id>``."""
    return f"batch:{child}"


def callback_id(batch: str, which: str) -> str:
    """``batch:<id>:on_success`` / ``batch:<id>:on_complete``."""
    return f"batch:{batch}:{which}"


def link_id(chain: str, index: int) -> str:
    """``chain:<id>:<index>``."""
    return f"chain:{chain}:{index}"


def link_header(chain: str, index: int) -> str:
    """The ``Jetq-Chain`` value of link ``index``: ``<id>:<index>``."""
    return f"{chain}:{index}"


def _compact(value: Any) -> bytes:
    """Compact JSON with object keys sorted at every depth (as serde_json writes a Value)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")


def callback_body(args: Dict[str, Any], summary: Dict[str, Any]) -> bytes:
    """A callback's body: its arguments with ``"batch": <summary>`` (replacing any given)."""
    body = dict(args)
    body["batch"] = summary
    return _compact(body)


def chain_body(links: Sequence[Dict[str, Any]], index: int, previous: Any) -> bytes:
    """Link ``index``'s body: its arguments, plus ``"previous"`` when it takes the previous
    link's result (``None`` → ``null``)."""
    link = links[index]
    args = link.get("args")
    if link.get("with_previous") and isinstance(args, dict):
        args = dict(args)
        args["previous"] = previous
    return _compact(args)


def _summary(record: Dict[str, Any], markers: Sequence[Tuple[str, Dict[str, Any]]]) -> Dict[str, Any]:
    """The summary a callback receives, from the markers ordered by member id."""
    summary: Dict[str, Any] = {"id": record.get("id", ""), "total": int(record.get("total", 0)), "succeeded": 0, "dead": 0}
    results: List[Dict[str, Any]] = []
    budget = MAX_INLINE_RESULTS
    truncated = False
    for id, marker in markers:
        outcome = marker.get("outcome")
        summary["succeeded" if outcome == "succeeded" else "dead"] += 1
        if record.get("chord"):
            entry: Dict[str, Any] = {"id": id, "outcome": outcome}
            result = marker.get("result")
            if marker.get("result_ref"):
                entry["result_ref"] = marker["result_ref"]  # stored in <PREFIX>_RESULTS
            elif result is not None:
                size = len(_compact(result))
                if size > budget:
                    truncated = True
                else:
                    budget -= size
                    entry["result"] = result
            results.append(entry)
    if results:
        summary["results"] = results
    if truncated:
        summary["results_truncated"] = True
    return summary


def _may_be_complete(record: Dict[str, Any]) -> bool:
    """Closed, counted to the total, and something left to do (PROTOCOL §13)."""
    if record.get("state") != "closed":
        return False
    if int(record.get("succeeded", 0)) + int(record.get("dead", 0)) < int(record.get("total", 0)):
        return False
    pending = any(not (record.get(f) or {}).get("done_at") for f in ("completed", "succeeded_all"))
    return pending or bool(record.get("parent"))


# ---------------------------------------------------------------------------------------------
# Results


@dataclasses.dataclass(frozen=True)
class Member:
    """A member to add to a batch."""

    queue: str
    task: str
    args: Any = None
    key: Optional[str] = None
    max_attempts: Optional[int] = None
    timeout: Optional[float] = None
    track_status: bool = False


@dataclasses.dataclass(frozen=True)
class BatchHandle:
    """A batch that was enqueued: its id and its members as enqueued, in order."""

    id: str
    members: List["Enqueued"]


@dataclasses.dataclass(frozen=True)
class BatchStatus:
    """How far a batch is, counted from its members' markers (exact)."""

    id: str
    #: ``enqueuing``, ``open`` or ``closed``.
    state: str
    total: int
    #: Members not finished yet: ``running`` + ``queued``.
    pending: int
    succeeded: int
    #: Dead-lettered or cancelled.
    dead: int
    #: ``on_complete`` fired.
    completed: bool
    #: ``on_success`` fired.
    succeeded_all: bool
    parent: Optional[str]
    chord: bool
    #: Of the pending members, those a live worker runs now (from the workers' presence
    #: records, docs/PROTOCOL.md §14: as fresh as the presence interval).
    running: int = 0
    #: Of the pending members, those not running (queued, or waiting for a retry).
    queued: int = 0


@dataclasses.dataclass(frozen=True)
class ChainHandle:
    """A chain that was started."""

    id: str


@dataclasses.dataclass(frozen=True)
class ChainStatus:
    """A chain's record: ``running``, ``succeeded`` or ``failed`` (at ``failed_at``)."""

    id: str
    state: str
    #: The links, ``{"queue", "task", "args", "with_previous"?}``.
    links: List[Dict[str, Any]]
    #: The index of the last link enqueued.
    at: int
    failed_at: Optional[int]
    created_at: str


# ---------------------------------------------------------------------------------------------
# The bucket


def bucket_stream_config(subjects: Subjects, replicas: int = 1) -> StreamConfig:
    """The workflow bucket's stream as the Rust side creates it (history 1, file storage,
    max age 7 days)."""
    bucket = workflow_bucket(subjects)
    return StreamConfig(
        name=f"KV_{bucket}",
        description="jetq batches and chains: b.<batch>, m.<batch>.<member>, c.<chain>",
        subjects=[f"$KV.{bucket}.>"],
        max_msgs_per_subject=1,
        max_age=MAX_AGE,
        storage=StorageType.FILE,
        allow_rollup_hdrs=True,
        deny_delete=True,
        deny_purge=False,
        allow_direct=True,
        num_replicas=replicas,
        discard=DiscardPolicy.NEW,
    )


_STORES: "weakref.WeakKeyDictionary[AsyncProducer, KeyValue]" = weakref.WeakKeyDictionary()


async def _store(producer: "AsyncProducer") -> KeyValue:
    """The producer's workflow bucket, created when missing if it may provision."""
    cached = _STORES.get(producer)
    if cached is not None:
        return cached
    js = producer.client.jetstream(timeout=producer.config.request_timeout)
    bucket = workflow_bucket(producer.subjects)
    try:
        try:
            kv = await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            if not producer.config.provision:
                raise WorkflowStoreError(f"the bucket {bucket} does not exist (JETQ_PROVISION=false)") from None
            try:
                await js.add_stream(bucket_stream_config(producer.subjects, producer.config.stream_replicas))
            except nats.js.errors.BadRequestError as err:
                if err.err_code != 10058:
                    raise
            kv = await js.key_value(bucket)
    except WorkflowStoreError:
        raise
    except Exception as err:
        raise WorkflowStoreError(f"cannot open {bucket}: {err}") from err
    _STORES[producer] = kv
    return kv


async def _read(kv: KeyValue, key: str) -> Optional[Tuple[int, Dict[str, Any]]]:
    try:
        entry = await kv.get(key)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return None
    except Exception as err:
        raise WorkflowStoreError(f"cannot read {key}: {err}") from err
    if entry.value is None or entry.revision is None:
        return None
    try:
        value = json.loads(entry.value)
    except ValueError as err:
        raise WorkflowStoreError(f"{key} is not a record: {err}") from None
    if not isinstance(value, dict):
        raise WorkflowStoreError(f"{key} is not a record")
    return entry.revision, value


async def _create(kv: KeyValue, key: str, value: Dict[str, Any]) -> bool:
    """Create-only write; False if the key exists."""
    try:
        await kv.create(key, _compact(value))
        return True
    except nats.js.errors.KeyWrongLastSequenceError:
        return False
    except Exception as err:
        raise WorkflowStoreError(f"cannot create {key}: {err}") from err


async def _update(kv: KeyValue, key: str, change: Any) -> Optional[Dict[str, Any]]:
    """Compare-and-set: ``change(record)`` returns False to write nothing. The record as stored
    (changed or not); None when there is none."""
    for _ in range(_CAS_ROUNDS):
        found = await _read(kv, key)
        if found is None:
            return None
        revision, record = found
        if not change(record):
            return record
        try:
            await kv.update(key, _compact(record), last=revision)
            return record
        except nats.js.errors.KeyWrongLastSequenceError:
            await asyncio.sleep(0.001)
            continue
        except Exception as err:
            raise WorkflowStoreError(f"cannot write {key}: {err}") from err
    raise WorkflowStoreError(f"{key}: gave up after {_CAS_ROUNDS} conflicting writes")


async def _markers(kv: KeyValue, batch: str) -> List[Tuple[str, Dict[str, Any]]]:
    """Every marker of a batch: (member id, marker), ordered by member id."""
    prefix = f"m.{batch}."
    out: List[Tuple[str, Dict[str, Any]]] = []
    try:
        watcher = await kv.watch(f"{prefix}>", ignore_deletes=True)
        try:
            while True:
                entry = await watcher.updates(timeout=10.0)  # type: ignore[no-untyped-call]
                if entry is None:
                    break
                if entry.value is None or not entry.key.startswith(prefix):
                    continue
                try:
                    marker = json.loads(entry.value)
                except ValueError:
                    continue
                if isinstance(marker, dict):
                    encoded = entry.key[len(prefix) :]
                    member = id_from_key(encoded)
                    out.append((member if member is not None else encoded, marker))
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
    except WorkflowStoreError:
        raise
    except Exception as err:
        raise WorkflowStoreError(f"cannot list m.{batch}.>: {err}") from err
    out.sort(key=lambda item: item[0])
    return out


# ---------------------------------------------------------------------------------------------
# Publishing


def _trace(headers: Dict[str, str], record: Dict[str, Any]) -> None:
    parent = record.get("traceparent")
    if parent:
        headers[TRACEPARENT] = parent
        state = record.get("tracestate")
        if state:
            headers[TRACESTATE] = state


async def _publish_fixed(producer: "AsyncProducer", queue: str, task: str, id: str, headers: Dict[str, str], body: bytes) -> "Enqueued":
    """Publishes a task with a fixed ``Nats-Msg-Id`` (a callback or a link) until acked."""
    all_headers = {MSG_ID: id, ENQUEUED_AT: format_timestamp(), **headers}
    prepared = Prepared(
        queue=queue,
        task=task,
        subject=producer.subjects.task(queue, task),
        id=id,
        headers=all_headers,
        payload=body,
    )
    return await producer._publish_until_acked(prepared, None)


def _server_allows_atomic(producer: "AsyncProducer") -> bool:
    from .producer import _server_version, parse_version

    try:
        version = parse_version(_server_version(producer.client))
    except Exception:
        return False
    return version is not None and version >= (2, 12, 0)


_ATOMIC_OFF: "weakref.WeakSet[AsyncProducer]" = weakref.WeakSet()


async def _publish_atomic(producer: "AsyncProducer", slice_: List[Prepared]) -> Optional[List["Enqueued"]]:
    """One atomic batch (ADR-50): every message but the last without a reply, the last with
    ``Nats-Batch-Commit: 1``; its answer acks the whole batch. None when the batch was not
    stored whole (refused, no answer, not a batch ack): the caller sends one by one with the
    same ids, which is always correct."""
    from .producer import Enqueued

    nc = producer.client
    batch_id = new_ulid()
    inbox = nc.new_inbox()
    answer: "asyncio.Future[bytes]" = asyncio.get_running_loop().create_future()

    async def on_answer(msg: Any) -> None:
        if not answer.done():
            answer.set_result(msg.data)

    sub = await nc.subscribe(inbox, cb=on_answer)
    try:
        for index, prepared in enumerate(slice_):
            headers = dict(prepared.headers)
            headers["Nats-Batch-Id"] = batch_id
            headers["Nats-Batch-Sequence"] = str(index + 1)
            last = index + 1 == len(slice_)
            if last:
                headers["Nats-Batch-Commit"] = "1"
            await nc.publish(prepared.subject, prepared.payload, reply=inbox if last else "", headers=headers)
        data = await asyncio.wait_for(answer, timeout=producer.config.request_timeout)
    except Exception as err:  # not all sent, or no answer: one by one settles it
        logger.debug("jetq: atomic batch not confirmed (%s); sending one by one", err)
        return None
    finally:
        try:
            await sub.unsubscribe()
        except Exception:
            pass
    try:
        ack = json.loads(data)
    except ValueError:
        return None
    if not isinstance(ack, dict):
        return None
    error = ack.get("error")
    if isinstance(error, dict):
        if error.get("err_code") == _ATOMIC_DISABLED:
            _ATOMIC_OFF.add(producer)
            logger.warning(
                "jetq: the task stream does not allow atomic publish: batch members are sent one by one; "
                "run jetq-provision to enable it (allow_atomic)"
            )
        return None
    count = len(slice_)
    seq = ack.get("seq")
    if ack.get("batch") != batch_id or ack.get("count") != count or not isinstance(seq, int) or seq < count:
        logger.warning("jetq: the answer to a batch commit was not a batch ack; resending one by one")
        return None
    stream = str(ack.get("stream", ""))
    return [Enqueued(id=p.id, sequence=seq - count + 1 + i, duplicate=False, stream=stream) for i, p in enumerate(slice_)]


async def _enqueue_members(producer: "AsyncProducer", batch: str, chord: bool, members: Sequence[Member]) -> List["Enqueued"]:
    """Publishes members with ``Jetq-Batch`` (tracked for a chord); atomic slices of up to
    1,000 on 2.12+, else (and for a slice not stored whole) one by one, pipelined."""
    prepared_all: List[Prepared] = []
    for member in members:
        prepared = producer.prepare(
            member.queue,
            member.task,
            member.args,
            key=member.key,
            max_attempts=member.max_attempts,
            timeout=member.timeout,
            track_status=member.track_status or chord,
        )
        prepared = dataclasses.replace(prepared, headers={**prepared.headers, BATCH_HEADER: batch})
        prepared_all.append(await producer._track_if_cataloged(prepared))
    if any(p.tracked for p in prepared_all):
        await producer._open_status_for(next(p for p in prepared_all if p.tracked))
    results: List[Any] = [None] * len(prepared_all)
    atomic = _server_allows_atomic(producer)
    for start in range(0, len(prepared_all), MAX_ATOMIC):
        slice_ = prepared_all[start : start + MAX_ATOMIC]
        stored = await _publish_atomic(producer, slice_) if atomic and producer not in _ATOMIC_OFF else None
        if stored is not None:
            for offset, (prepared, done) in enumerate(zip(slice_, stored)):
                results[start + offset] = done
                if prepared.tracked:
                    await producer._record_queued(prepared, done)
            continue
        for offset, prepared in enumerate(slice_):
            results[start + offset] = prepared
    # One by one (pipelined) for what no atomic batch stored.
    loose = [(i, p) for i, p in enumerate(results) if isinstance(p, Prepared)]
    if loose:

        async def one(index: int, prepared: Prepared) -> None:
            try:
                results[index] = await producer._deliver(prepared, None)
            except EnqueueError as err:
                results[index] = err

        window = max(1, producer.config.enqueue_window)
        for begin in range(0, len(loose), window):
            await asyncio.gather(*(one(i, p) for i, p in loose[begin : begin + window]))
    failed = [r for r in results if isinstance(r, EnqueueError)]
    if failed:
        raise MembersNotEnqueued(batch, len(failed), failed[0])
    return list(results)


# ---------------------------------------------------------------------------------------------
# Batches


def _callback(queue: str, task: str, args: Any) -> Dict[str, Any]:
    if not isinstance(args, dict):
        raise InvalidWorkflow(
            f'the arguments of callback {task} are not a JSON object: the batch summary is added to them as field "batch"'
        )
    from .names import validate_name

    validate_name("queue", queue)
    validate_name("task", task)
    return {"queue": queue, "task": task, "args": args}


class Batch:
    """A batch being built: :meth:`add` members, :meth:`on_success` / :meth:`on_complete`
    callbacks, then :meth:`enqueue`.

    :param id: the batch id (``[A-Za-z0-9_-]{1,64}``; default a ULID). An existing batch with
        this id raises :class:`BatchExists`, except one left ``enqueuing`` by an enqueue that
        stopped half-way, which this one takes over (give members keys)
    :param keep_open: leave it open: :func:`batch_add` adds members, :func:`batch_close` closes
    :param parent: make it one member of the open batch ``parent``
    :param chord: members are tracked and the callbacks receive their results
    :param skip_callback_check: do not check the callbacks in the task-type catalog
    """

    def __init__(
        self,
        producer: "AsyncProducer",
        *,
        id: Optional[str] = None,
        keep_open: bool = False,
        parent: Optional[str] = None,
        chord: bool = False,
        skip_callback_check: bool = False,
    ) -> None:
        self._producer = producer
        self.id = id
        self.keep_open = keep_open
        self.parent = parent
        self.chord = chord
        self.skip_callback_check = skip_callback_check
        self.members: List[Member] = []
        self._on_success: Optional[Dict[str, Any]] = None
        self._on_complete: Optional[Dict[str, Any]] = None

    def add(self, queue: str, task: str, args: Any = None, **options: Any) -> "Batch":
        """Adds a member (options: ``key``, ``max_attempts``, ``timeout``, ``track_status``)."""
        self.members.append(Member(queue, task, args, **options))
        return self

    def on_success(self, queue: str, task: str, args: Optional[Dict[str, Any]] = None) -> "Batch":
        """The task enqueued once when every member succeeded; its arguments get the summary
        as field ``batch``."""
        self._on_success = _callback(queue, task, {} if args is None else args)
        return self

    def on_complete(self, queue: str, task: str, args: Optional[Dict[str, Any]] = None) -> "Batch":
        """The task enqueued once when every member finished, some perhaps dead-lettered."""
        self._on_complete = _callback(queue, task, {} if args is None else args)
        return self

    async def enqueue(self) -> BatchHandle:
        """Creates the batch and enqueues its members; returns once every member is stored.

        :raises BatchExists, UnknownCallback, MembersNotEnqueued, InvalidWorkflow, WorkflowStoreError:
            or any error of a single enqueue
        """
        producer = self._producer
        id = self.id if self.id is not None else new_ulid()
        validate_id("batch", id)
        if self.parent is not None:
            validate_id("batch", self.parent)
        from .names import validate_name

        for member in self.members:
            validate_name("queue", member.queue)
            validate_name("task", member.task)
        if not self.skip_callback_check:
            for callback in (self._on_success, self._on_complete):
                if callback is not None:
                    await _check_callback(producer, callback)
        kv = await _store(producer)
        record: Dict[str, Any] = {
            "id": id,
            "state": "enqueuing",
            "total": len(self.members),
            "succeeded": 0,
            "dead": 0,
        }
        if self._on_success is not None:
            record["on_success"] = self._on_success
        if self._on_complete is not None:
            record["on_complete"] = self._on_complete
        if self.chord:
            record["chord"] = True
        if self.parent is not None:
            record["parent"] = self.parent
        record["created_at"] = format_timestamp()
        traceparent, tracestate = current_trace_context()
        if traceparent:
            record["traceparent"] = traceparent
            if tracestate:
                record["tracestate"] = tracestate
        key = record_key(id)
        if await _create(kv, key, record):
            if self.parent is not None:
                try:
                    await _grow(kv, self.parent, 1)
                except WorkflowStoreError as err:
                    raise WorkflowStoreError(f"cannot join batch {self.parent}: {err.reason}") from err
        else:
            found = await _read(kv, key)
            if found is None:
                raise WorkflowStoreError(f"{key} exists and does not: try again")
            revision, existing = found
            if existing.get("state") != "enqueuing":
                raise BatchExists(id)
            try:
                await kv.update(key, _compact(record), last=revision)
            except Exception as err:
                raise WorkflowStoreError(f"cannot take over {key}: {err}") from err
            logger.info("jetq: taking over batch %s whose enqueue stopped half-way", id)
        members = await _enqueue_members(producer, id, self.chord, self.members)
        await _set_state(producer, kv, id, "open" if self.keep_open else "closed")
        return BatchHandle(id=id, members=members)


async def _check_callback(producer: "AsyncProducer", callback: Dict[str, Any]) -> None:
    """A callback's type must be in the task-type catalog when there is one (a missing or
    unreadable catalog accepts it, as the Rust producer)."""
    from .catalog import catalog_bucket, catalog_key

    js = producer.client.jetstream(timeout=producer.config.request_timeout)
    try:
        kv = await js.key_value(catalog_bucket(producer.subjects))
    except Exception:
        return
    try:
        await kv.get(catalog_key(callback["queue"], callback["task"]))
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        raise UnknownCallback(callback["queue"], callback["task"]) from None
    except Exception:
        return


async def _grow(kv: KeyValue, id: str, members: int) -> Dict[str, Any]:
    closed = False

    def change(record: Dict[str, Any]) -> bool:
        nonlocal closed
        closed = record.get("state") == "closed"
        if closed:
            return False
        record["total"] = int(record.get("total", 0)) + members
        return True

    record = await _update(kv, record_key(id), change)
    if record is None:
        raise WorkflowStoreError(f"no batch {id}")
    if closed:
        raise WorkflowStoreError(f"batch {id} is closed: no member can be added")
    return record


async def _set_state(producer: "AsyncProducer", kv: KeyValue, id: str, state: str) -> None:
    def change(record: Dict[str, Any]) -> bool:
        if record.get("state") in (state, "closed"):
            return False
        record["state"] = state
        return True

    record = await _update(kv, record_key(id), change)
    if record is not None and _may_be_complete(record):
        await _complete(producer, kv, id)


async def _complete(producer: "AsyncProducer", kv: KeyValue, id: str) -> None:
    """Every member finished (the markers say): fire ``on_complete``, and ``on_success`` if
    none is dead; then finish the batch as a member of its parent."""
    found = await _read(kv, record_key(id))
    if found is None or not _may_be_complete(found[1]):
        return
    record = found[1]
    markers = await _markers(kv, id)
    if len(markers) < int(record.get("total", 0)):
        return
    summary = _summary(record, markers)
    links = links_header(markers)
    all_succeeded = summary["dead"] == 0
    await _fire(producer, kv, id, "on_complete", summary, links)
    if all_succeeded:
        await _fire(producer, kv, id, "on_success", summary, links)
    parent = record.get("parent")
    if parent:
        await _finish_member(producer, kv, parent, child_member_id(id), "succeeded" if all_succeeded else "dead")


_FIRE_FIELD = {"on_complete": "completed", "on_success": "succeeded_all"}


async def _fire(producer: "AsyncProducer", kv: KeyValue, id: str, which: str, summary: Dict[str, Any], links: Optional[str] = None) -> None:
    field = _FIRE_FIELD[which]
    now = format_timestamp()

    def start(record: Dict[str, Any]) -> bool:
        if record.get(field) is not None:
            return False
        record[field] = {"started_at": now}
        return True

    record = await _update(kv, record_key(id), start)
    if record is None:
        return
    fire = record.get(field) or {}
    if fire.get("done_at"):
        return
    callback = record.get(which)
    if isinstance(callback, dict):
        headers: Dict[str, str] = {}
        _trace(headers, record)
        if links:
            headers[LINKS_HEADER] = links
        try:
            await _publish_fixed(
                producer,
                callback["queue"],
                callback["task"],
                callback_id(id, which),
                headers,
                callback_body(callback.get("args") or {}, summary),
            )
        except JetqError as err:
            raise WorkflowStoreError(f"cannot enqueue {callback.get('task')} ({callback_id(id, which)}): {err}") from err
    done = format_timestamp()

    def finish(record: Dict[str, Any]) -> bool:
        fire = record.get(field)
        if isinstance(fire, dict) and not fire.get("done_at"):
            fire["done_at"] = done
            return True
        return False

    await _update(kv, record_key(id), finish)


async def _finish_member(producer: "AsyncProducer", kv: KeyValue, batch: str, member: str, outcome: str) -> None:
    """A nested batch finished in its parent (as a worker finishes a member)."""
    key = marker_key(batch, member)
    marker = {"outcome": outcome, "at": format_timestamp()}
    delta = (1, 0) if outcome == "succeeded" else (0, 1)
    if not await _create(kv, key, marker):
        found = await _read(kv, key)
        if found is not None:
            revision, existing = found
            if existing.get("outcome") == "dead" and outcome == "succeeded":
                await kv.update(key, _compact(marker), last=revision)
                delta = (1, -1)
            elif existing.get("outcome") != outcome:
                delta = (0, 0)

    def count(record: Dict[str, Any]) -> bool:
        record["succeeded"] = max(0, int(record.get("succeeded", 0)) + delta[0])
        record["dead"] = max(0, int(record.get("dead", 0)) + delta[1])
        return True

    record = await _update(kv, record_key(batch), count)
    if record is not None and _may_be_complete(record):
        await _complete(producer, kv, batch)


async def batch_add(producer: "AsyncProducer", id: str, members: Sequence[Member]) -> List["Enqueued"]:
    """Adds members to an open batch: its total grows first (so it cannot complete without
    them), then they are published. On :class:`MembersNotEnqueued`, enqueue those again with
    the same keys through :func:`batch_retry_members`."""
    validate_id("batch", id)
    kv = await _store(producer)
    record = await _grow(kv, id, len(members))
    return await _enqueue_members(producer, id, bool(record.get("chord")), members)


async def batch_retry_members(producer: "AsyncProducer", id: str, members: Sequence[Member]) -> List["Enqueued"]:
    """Enqueues members again after :class:`MembersNotEnqueued`, without growing the total."""
    validate_id("batch", id)
    kv = await _store(producer)
    found = await _read(kv, record_key(id))
    if found is None:
        raise WorkflowStoreError(f"no batch {id}")
    return await _enqueue_members(producer, id, bool(found[1].get("chord")), members)


async def batch_close(producer: "AsyncProducer", id: str) -> None:
    """Closes an open batch; its callbacks fire when the members are done (from here, at
    once, if they already are)."""
    validate_id("batch", id)
    kv = await _store(producer)
    await _set_state(producer, kv, id, "closed")


async def batch_status(producer: "AsyncProducer", id: str) -> Optional[BatchStatus]:
    """A batch's status counted from its markers; None if there is no such batch."""
    validate_id("batch", id)
    kv = await _store(producer)
    found = await _read(kv, record_key(id))
    if found is None:
        return None
    record = found[1]
    markers = await _markers(kv, id)
    succeeded = sum(1 for _, m in markers if m.get("outcome") == "succeeded")
    total = int(record.get("total", 0))
    pending = max(0, total - len(markers))
    running = 0
    if pending:
        from .workers import list_workers, running_members

        try:
            workers = await list_workers(producer.client, producer.config.prefix)
        except Exception as err:  # best effort: without presence nothing is known to run
            logger.debug("jetq: batch status without worker presence: %s", err)
            workers = []
        running = min(pending, len(running_members(workers, id, (member for member, _ in markers))))
    return BatchStatus(
        id=str(record.get("id", id)),
        state=str(record.get("state", "")),
        total=total,
        pending=pending,
        running=running,
        queued=pending - running,
        succeeded=succeeded,
        dead=len(markers) - succeeded,
        completed=bool((record.get("completed") or {}).get("done_at")),
        succeeded_all=bool((record.get("succeeded_all") or {}).get("done_at")),
        parent=record.get("parent"),
        chord=bool(record.get("chord")),
    )


# ---------------------------------------------------------------------------------------------
# Chains


class Chain:
    """A chain being built: links in order, then :func:`enqueue_chain`."""

    def __init__(self, id: Optional[str] = None) -> None:
        self.id = id
        self.links: List[Dict[str, Any]] = []

    def then(self, queue: str, task: str, args: Any = None) -> "Chain":
        """The next link: runs after the previous one succeeded."""
        self.links.append({"queue": queue, "task": task, "args": args})
        return self

    def then_with_previous(self, queue: str, task: str, args: Optional[Dict[str, Any]] = None) -> "Chain":
        """The next link, given the previous link's result as field ``previous`` of its
        arguments (``null`` if it set none). The previous link is tracked."""
        self.links.append({"queue": queue, "task": task, "args": {} if args is None else args, "with_previous": True})
        return self


def _tracks(links: Sequence[Dict[str, Any]], index: int) -> bool:
    return index + 1 < len(links) and bool(links[index + 1].get("with_previous"))


async def enqueue_chain(producer: "AsyncProducer", chain: Chain) -> ChainHandle:
    """Starts a chain: its record ``c.<id>`` is created (create-only) and its first link
    enqueued; each link enqueues the next when it succeeds.

    :raises ChainExists, InvalidWorkflow, WorkflowStoreError:
    """
    from .names import validate_name

    id = chain.id if chain.id is not None else new_ulid()
    validate_id("chain", id)
    links = chain.links
    if not links:
        raise InvalidWorkflow("invalid chain: it has no link")
    if links[0].get("with_previous"):
        raise InvalidWorkflow("invalid chain: the first link has no previous result to take")
    for link in links:
        validate_name("queue", link["queue"])
        validate_name("task", link["task"])
        if link.get("with_previous") and not isinstance(link.get("args"), dict):
            raise InvalidWorkflow(
                f"invalid chain: link {link['task']} takes the previous result but its arguments are not a JSON object"
            )
    record: Dict[str, Any] = {"id": id, "state": "running", "links": links, "at": 0, "created_at": format_timestamp()}
    traceparent, tracestate = current_trace_context()
    if traceparent:
        record["traceparent"] = traceparent
        if tracestate:
            record["tracestate"] = tracestate
    if any(_tracks(links, i) for i in range(len(links))):
        try:
            await producer._status.kv(for_enqueue=True)
        except JetqError:
            pass
    kv = await _store(producer)
    if not await _create(kv, chain_key(id), record):
        raise ChainExists(id)
    headers = {CHAIN_HEADER: link_header(id, 0)}
    if _tracks(links, 0):
        headers[TRACK_STATUS] = "1"
    _trace(headers, record)
    try:
        await _publish_fixed(producer, links[0]["queue"], links[0]["task"], link_id(id, 0), headers, chain_body(links, 0, None))
    except JetqError as err:
        raise WorkflowStoreError(f"cannot enqueue {links[0]['task']} ({link_id(id, 0)}): {err}") from err
    return ChainHandle(id=id)


async def chain_status(producer: "AsyncProducer", id: str) -> Optional[ChainStatus]:
    """A chain's record; None if there is none."""
    validate_id("chain", id)
    kv = await _store(producer)
    found = await _read(kv, chain_key(id))
    if found is None:
        return None
    record = found[1]
    failed_at = record.get("failed_at")
    return ChainStatus(
        id=str(record.get("id", id)),
        state=str(record.get("state", "")),
        links=list(record.get("links") or []),
        at=int(record.get("at", 0)),
        failed_at=int(failed_at) if isinstance(failed_at, int) else None,
        created_at=str(record.get("created_at", "")),
    )
