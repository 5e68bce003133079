"""Live workers and runtime schedule control (docs/PROTOCOL.md §14 and §7).

Every jetq worker process keeps a record in the KV bucket ``<PREFIX>_WORKERS`` (its host, pid,
version, queues, concurrency and the tasks it runs now), rewritten every few seconds and gone
when it stops. :func:`list_workers` reads them::

    import nats, jetq.workers

    nc = await nats.connect("nats://127.0.0.1:4222")
    for worker in await jetq.workers.list_workers(nc):
        print(worker.host, worker.queues, worker.running_count)

:func:`pause_schedule`, :func:`resume_schedule` and :func:`run_schedule` write the keys of the
scheduler's state bucket that every ``jetq-scheduler`` replica watches (as ``jetq schedules
pause|resume|run`` does).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any, Dict, Iterable, List, Optional, Tuple

from nats.aio.client import Client as NatsClient

from .protocol import Subjects, format_timestamp, new_ulid

logger = logging.getLogger("jetq")

#: The most running tasks a record lists (``running_count`` counts all of them).
MAX_RUNNING = 100

__all__ = [
    "MAX_RUNNING",
    "RunningTask",
    "WorkerRecord",
    "control_key",
    "list_workers",
    "parse_worker",
    "pause_schedule",
    "resume_schedule",
    "run_id",
    "run_key",
    "run_schedule",
    "running_members",
    "worker_id",
    "workers_bucket",
]


@dataclasses.dataclass(frozen=True)
class RunningTask:
    """One attempt a worker runs now."""

    id: str
    queue: str
    task: str
    started_at: str
    attempt: int
    sequence: int = 0
    #: The batch the task is a member of (its ``Jetq-Batch``), if any (1.11; absent in older
    #: records).
    batch: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class WorkerRecord:
    """One live worker process: the value of its key in ``<PREFIX>_WORKERS``."""

    id: str
    host: str
    pid: int
    version: str
    prefix: str
    queues: List[str]
    concurrency: int
    started_at: str
    heartbeat_at: str
    running: List[RunningTask]
    running_count: int


def workers_bucket(subjects: Subjects) -> str:
    """The presence bucket of a prefix: ``<PREFIX>_WORKERS`` (``JETQ_WORKERS`` by default)."""
    return subjects.status_bucket[: -len("_STATUS")] + "_WORKERS"


def scheduler_bucket(subjects: Subjects) -> str:
    """The scheduler's state bucket: ``<PREFIX>_SCHEDULER``."""
    return subjects.status_bucket[: -len("_STATUS")] + "_SCHEDULER"


def worker_id(host: str, pid: int, ulid: str) -> str:
    """A worker id ``<host>-<pid>-<ULID>``: characters of the host outside ``[A-Za-z0-9_-]``
    become ``_``, cut to 64; an empty host is ``unknown``."""
    cleaned = "".join(c if (c.isascii() and c.isalnum()) or c in "_-" else "_" for c in host)[:64]
    return f"{cleaned or 'unknown'}-{pid}-{ulid}"


def parse_worker(raw: bytes) -> Optional[WorkerRecord]:
    """A record from its JSON value; ``None`` if it does not parse (unknown fields ignored)."""
    try:
        value: Dict[str, Any] = json.loads(raw)
        running = [
            RunningTask(
                id=str(t["id"]),
                queue=str(t["queue"]),
                task=str(t["task"]),
                started_at=str(t["started_at"]),
                attempt=int(t["attempt"]),
                sequence=int(t.get("sequence", 0)),
                batch=str(t["batch"]) if t.get("batch") is not None else None,
            )
            for t in value.get("running") or []
        ]
        return WorkerRecord(
            id=str(value["id"]),
            host=str(value["host"]),
            pid=int(value["pid"]),
            version=str(value["version"]),
            prefix=str(value["prefix"]),
            queues=[str(q) for q in value["queues"]],
            concurrency=int(value["concurrency"]),
            started_at=str(value["started_at"]),
            heartbeat_at=str(value["heartbeat_at"]),
            running=running,
            running_count=int(value.get("running_count", 0)),
        )
    except (ValueError, KeyError, TypeError) as err:
        logger.debug("jetq: unreadable worker record: %s", err)
        return None


async def list_workers(nc: NatsClient, prefix: str = "jetq") -> List[WorkerRecord]:
    """The live workers, sorted by host then id; none when the bucket does not exist."""
    js = nc.jetstream()
    try:
        kv = await js.key_value(workers_bucket(Subjects(prefix)))
    except Exception as err:  # no bucket: no worker with presence ever ran here
        logger.debug("jetq: no presence bucket: %s", err)
        return []
    try:
        keys = await kv.keys()
    except Exception:  # nats-py raises NoKeysError for an empty bucket
        return []
    workers = []
    for key in keys:
        try:
            entry = await kv.get(key)
        except Exception:  # deleted or expired since the listing
            continue
        if entry.value is None:
            continue
        record = parse_worker(entry.value)
        if record is not None:
            workers.append(record)
    workers.sort(key=lambda w: (w.host, w.id))
    return workers


def running_members(
    records: Iterable[WorkerRecord], batch: str, finished: Iterable[str] = ()
) -> Dict[str, Tuple[WorkerRecord, RunningTask]]:
    """The members of ``batch`` that live workers run now, by member id (a replay's id mapped to
    the original task id), as batch status counts them (docs/PROTOCOL.md §14): a member listed
    by two records counts once, under the record written last; members in ``finished`` (they
    have a marker) are left out."""
    from .workflows import member_id

    done = set(finished)
    members: Dict[str, Tuple[WorkerRecord, RunningTask]] = {}
    for record in records:
        for task in record.running:
            if task.batch != batch:
                continue
            member = member_id(task.id)
            if member in done:
                continue
            seen = members.get(member)
            if seen is None or seen[0].heartbeat_at < record.heartbeat_at:
                members[member] = (record, task)
    return members


def control_key(schedule: str) -> str:
    """``control.<schedule>``: pauses and resumes a schedule."""
    return f"control.{schedule}"


def run_key(schedule: str, request: str) -> str:
    """``run.<schedule>.<request id>``: runs a schedule once now."""
    return f"run.{schedule}.{request}"


def run_id(schedule: str, request: str) -> str:
    """The ``Nats-Msg-Id`` of a run-now task: ``<schedule>:run:<request id>``."""
    return f"{schedule}:run:{request}"


async def _set_paused(nc: NatsClient, schedule: str, paused: bool, by: str, prefix: str) -> Dict[str, Any]:
    from .names import validate_name

    validate_name("task", schedule)
    kv = await nc.jetstream().key_value(scheduler_bucket(Subjects(prefix)))
    control = {"paused": paused, "by": by, "at": format_timestamp()}
    await kv.put(control_key(schedule), json.dumps(control, separators=(",", ":")).encode())
    return control


async def pause_schedule(nc: NatsClient, schedule: str, by: str = "", prefix: str = "jetq") -> Dict[str, Any]:
    """Skips every fire of ``schedule`` until it is resumed (all scheduler replicas)."""
    return await _set_paused(nc, schedule, True, by, prefix)


async def resume_schedule(nc: NatsClient, schedule: str, by: str = "", prefix: str = "jetq") -> Dict[str, Any]:
    """Fires ``schedule`` again from its next fire."""
    return await _set_paused(nc, schedule, False, by, prefix)


async def run_schedule(nc: NatsClient, schedule: str, by: str = "", prefix: str = "jetq") -> str:
    """Asks the schedulers to enqueue ``schedule``'s task once now; returns the task id
    (``<schedule>:run:<request id>``)."""
    from .names import validate_name

    validate_name("task", schedule)
    kv = await nc.jetstream().key_value(scheduler_bucket(Subjects(prefix)))
    request = new_ulid()
    value = {"by": by, "at": format_timestamp()}
    await kv.put(run_key(schedule, request), json.dumps(value, separators=(",", ":")).encode())
    return run_id(schedule, request)
