"""Enqueueing the shop's background tasks onto jetq, for the Rust worker of examples/ to run.

One :class:`jetq.Producer` per process, created on first use (so after gunicorn forks its
workers, each has its own connection) and shared by every request thread.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import IO, Iterator, Optional

import jetq

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


def send_welcome_email(member_id: int, email: str, name: str) -> Optional[str]:
    """Enqueues the welcome email of a new member: task ``send_email`` on queue ``emails``.

    Called from ``transaction.on_commit``: the member is committed by now, so a failure here
    cannot undo the signup. The idempotency key makes a re-enqueue of the same member's email
    (from an outbox or an admin action) harmless inside the duplicate window. Returns the task id,
    or None if the task was NOT enqueued (logged as an error: the email is lost unless re-sent).
    """
    greeting = f"Hi {name}," if name else "Hi,"
    try:
        return producer().enqueue(
            "emails",
            "send_email",
            {
                "to": email,
                "subject": "Welcome to the shop",
                "body": f"{greeting}\n\nthanks for signing up.\n",
            },
            key=f"welcome-email-{member_id}",
        )
    except jetq.JetqError as err:
        logger.error("welcome email of member %s NOT enqueued (%s): %s", member_id, type(err).__name__, err)
        return None


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
