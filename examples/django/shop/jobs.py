"""Enqueueing the shop's background tasks onto jetq, for the Rust worker of examples/ to run.

The welcome email goes through the transactional outbox (:func:`jetq.django.enqueue`, no NATS
connection in the view); the exports through one :class:`jetq.Producer` per process, created on
first use (so after gunicorn forks its workers, each has its own connection) and shared by
every request thread.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import IO, Dict, Iterator, Optional

import jetq
import jetq.django

logger = logging.getLogger("shop")

_lock = threading.Lock()
_producer: Optional[jetq.Producer] = None
_pid: Optional[int] = None


def producer() -> jetq.Producer:
    """This process's producer, connected with the JETQ_* environment on first use."""
    global _producer, _pid
    with _lock:
        if _producer is None or _pid != os.getpid():
            _producer = jetq.Producer.from_env()
            _pid = os.getpid()
        return _producer


def reset_producer() -> None:
    """Closes this process's producer; the next use connects again (tests, settings changes)."""
    global _producer
    with _lock:
        if _producer is not None and _pid == os.getpid():
            _producer.close()
        _producer = None


def welcome_email(email: str, name: str) -> Dict[str, str]:
    """The arguments of task ``send_email`` for a new member's welcome email."""
    greeting = f"Hi {name}," if name else "Hi,"
    return {"to": email, "subject": "Welcome to the shop", "body": f"{greeting}\n\nthanks for signing up.\n"}


def enqueue_welcome_email(member_id: int, email: str, name: str) -> str:
    """Enqueues the welcome email of a new member (task ``send_email`` on queue ``emails``)
    **inside the signup transaction**, through jetq's transactional outbox: a row of the
    ``jetq_outbox`` table that commits with the member or rolls back with it, which
    ``jetq-relay`` publishes after the commit. Nothing is sent to NATS here, so a NATS outage
    or a crash after the commit does not lose the email. The idempotency key makes a second
    relay of the row (after a relay crash) a duplicate the server drops. Returns the task id.

    Must be called inside ``transaction.atomic()`` (:class:`jetq.NotInTransaction` otherwise).
    """
    return jetq.django.enqueue("emails", "send_email", welcome_email(email, name), key=f"welcome-email-{member_id}")


def start_export(export_id: str, rows: int, row_delay_ms: int = 0) -> str:
    """Enqueues an export: task ``generate_csv`` on queue ``exports``, with its status tracked
    (the worker reports progress and stores the CSV in the artifact store). Returns the task id.

    Keyed by the export id, so retrying after a :class:`jetq.Timeout` cannot start it twice.
    Raises :class:`jetq.EnqueueError` / :class:`jetq.ConnectError` for the view to report.
    """
    return producer().enqueue(
        "exports",
        "generate_csv",
        {"export_id": export_id, "rows": rows, "row_delay_ms": row_delay_ms},
        key=f"export-{export_id}",
        track_status=True,
    )


#: The name of an export's CSV in the artifact store (the Rust worker's ``CSV_ARTIFACT``).
CSV_ARTIFACT = "export.csv"


def export_status(task_id: str) -> Optional[jetq.TaskStatus]:
    """The task's status record (state, attempt, progress, result), or None if it has none."""
    return producer().status(task_id)


def watch_export(task_id: str, timeout: float) -> Iterator[jetq.TaskStatus]:
    """Each version of the task's status record as the server pushes it, until it is over (or
    ``timeout`` seconds passed)."""
    return producer().watch(task_id, timeout=timeout)


def cancel_export(task_id: str) -> jetq.CancelOutcome:
    """Cancels an export: dropped if it has not started, stopped at its next row if it runs."""
    return producer().cancel(task_id)


def export_csv_to(task_id: str, file: IO[bytes]) -> int:
    """Streams a finished export's CSV from the artifact store into ``file``; its size."""
    return producer().artifact_to(task_id, CSV_ARTIFACT, file, timeout=120.0)
