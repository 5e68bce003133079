"""Worker control (docs/PROTOCOL.md §16): ask the worker that runs a task to cancel it.

Every jetq worker with presence (§14) answers cancel requests on the core NATS subject
``<prefix>.control.worker.<worker id>.cancel``. A worker that runs the task terminates its
message (``+TERM``, so the server never delivers it again), tells the handler, and replies
``{"found": true, ...}``; the attempt ends cancelled — no retry, no dead letter. This is how an
**untracked** running task is cancelled (a tracked one is cancelled through its status record:
:meth:`jetq.AsyncProducer.cancel`). The Python client has no worker: it only asks::

    import nats, jetq.control

    nc = await nats.connect("nats://127.0.0.1:4222")
    reply = await jetq.control.cancel_running(nc, task_id)
    if reply is not None:
        print("cancelled on", reply.worker)
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Any, Dict, List, Optional

from nats.aio.client import Client as NatsClient

from .workers import WorkerRecord, list_workers

logger = logging.getLogger("jetq")

#: How long a worker has to answer (seconds).
ASK_TIMEOUT = 2.0

__all__ = [
    "ASK_TIMEOUT",
    "CancelReply",
    "cancel_request",
    "cancel_running",
    "cancel_subject",
    "parse_cancel_reply",
]


@dataclasses.dataclass(frozen=True)
class CancelReply:
    """A worker's answer to a cancel request."""

    #: The worker ran the task: its message is terminated and its handler told.
    found: bool
    #: The cancelled attempt's task-stream sequence (0 when not found).
    sequence: int = 0
    #: The cancelled attempt, 1-based (0 when not found).
    attempt: int = 0
    #: Why the request was not understood.
    error: Optional[str] = None
    #: The worker that answered (set by :func:`cancel_running`).
    worker: Optional[str] = None


def cancel_subject(prefix: str, worker_id: str) -> str:
    """``<prefix>.control.worker.<worker id>.cancel``."""
    return f"{prefix}.control.worker.{worker_id}.cancel"


def cancel_request(id: str, sequence: int = 0, by: Optional[str] = None) -> bytes:
    """The request body: compact JSON ``{"id", "sequence"?, "by"?}`` (``sequence`` 0 — any
    running task with this id — is left out)."""
    body: Dict[str, Any] = {"id": id}
    if sequence:
        body["sequence"] = sequence
    if by is not None:
        body["by"] = by
    return json.dumps(body, separators=(",", ":")).encode()


def parse_cancel_reply(raw: bytes) -> Optional[CancelReply]:
    """A reply from its JSON value; ``None`` if it does not parse (unknown fields ignored)."""
    try:
        value: Dict[str, Any] = json.loads(raw)
        return CancelReply(
            found=bool(value["found"]),
            sequence=int(value.get("sequence", 0)),
            attempt=int(value.get("attempt", 0)),
            error=str(value["error"]) if value.get("error") is not None else None,
        )
    except (ValueError, KeyError, TypeError) as err:
        logger.debug("jetq: unreadable cancel reply: %s", err)
        return None


async def cancel_running(
    nc: NatsClient,
    id: str,
    *,
    sequence: int = 0,
    queue: Optional[str] = None,
    prefix: str = "jetq",
    by: Optional[str] = None,
    timeout: float = ASK_TIMEOUT,
) -> Optional[CancelReply]:
    """Asks the live workers to cancel running task ``id`` (at ``sequence``, if not 0): those
    whose presence record lists it and — presence being up to one interval old — every other
    worker (of ``queue``, if given), all at once. Returns the reply of the worker that
    cancelled it, or ``None`` when no worker runs it (or none answered within ``timeout``)."""
    workers = await list_workers(nc, prefix)

    def lists(record: WorkerRecord) -> bool:
        return any(t.id == id and (sequence == 0 or t.sequence in (0, sequence)) for t in record.running)

    candidates: List[WorkerRecord] = [w for w in workers if lists(w) or queue is None or queue in w.queues]
    body = cancel_request(id, sequence, by)

    async def ask(record: WorkerRecord) -> Optional[CancelReply]:
        try:
            message = await nc.request(cancel_subject(prefix, record.id), body, timeout=timeout)
        except Exception as err:  # no responders, timeout: this worker cannot answer
            logger.debug("jetq: worker %s did not answer a cancel request: %s", record.id, err)
            return None
        reply = parse_cancel_reply(message.data)
        return dataclasses.replace(reply, worker=record.id) if reply is not None else None

    replies = await asyncio.gather(*(ask(w) for w in candidates))
    for reply in replies:
        if reply is not None and reply.found:
            return reply
    return None
