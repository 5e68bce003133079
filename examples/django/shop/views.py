"""The two views of the seed scenario.

- ``signup``: creates a member and enqueues the welcome email **in the same transaction**,
  through jetq's transactional outbox (``jetq.django.enqueue``; ``jetq-relay`` publishes it
  after the commit);
- ``create_export``: creates an export and enqueues ``generate_csv`` (status tracked), answering
  with the task id; ``export`` shows where it stands (state, progress, result) from the task's
  status record and cancels it (``DELETE``); ``export_csv`` hands out the finished CSV, streamed
  from the jetq artifact store (no disk shared with the workers).
"""

from __future__ import annotations

import json
import tempfile
from typing import Any, Dict, Iterator, Optional

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_http_methods

import jetq

from . import jobs
from .models import Export, Member, SignupEvent

#: The most rows one export may ask for.
MAX_ROWS = 1_000_000
#: How long one server-sent-events response follows an export before it ends (the browser's
#: EventSource reconnects by itself).
EVENTS_TIMEOUT = 300.0
#: The longest pause per row (a stand-in for a slow query, to watch progress and cancel).
MAX_ROW_DELAY_MS = 1000


def record_signup(member: Member) -> None:
    """Writes the signup's audit row (part of the signup transaction)."""
    SignupEvent.objects.create(member=member)


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """GET: the form. POST ``email`` (and ``name``): creates the member and enqueues the
    welcome email in the same transaction (the outbox)."""
    if request.method == "GET":
        return render(request, "shop/signup.html")
    email = request.POST.get("email", "").strip().lower()
    name = request.POST.get("name", "").strip()[:200]
    try:
        validate_email(email)
    except ValidationError:
        return JsonResponse({"error": "a valid email address is required"}, status=400)
    try:
        with transaction.atomic():
            member = Member.objects.create(email=email, name=name)
            # A row of the outbox table, in this transaction: a rollback below takes it back (no
            # email for a member who does not exist); the commit makes member and email durable
            # together, and jetq-relay publishes the email after it.
            jobs.enqueue_welcome_email(member.pk, member.email, member.name)
            record_signup(member)
    except IntegrityError:
        return JsonResponse({"error": "this email address has already signed up"}, status=409)
    return JsonResponse({"member": member.pk}, status=201)


def _body(request: HttpRequest) -> Dict[str, Any]:
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    return dict(request.POST.items())


@require_http_methods(["POST"])
def create_export(request: HttpRequest) -> HttpResponse:
    """POST ``rows`` (and optionally ``row_delay_ms``, a pause per row): creates an export,
    enqueues ``generate_csv`` and answers 202 with the task id. 503 when the queue is full or NATS does not answer (the export row says which)."""
    body = _body(request)
    try:
        rows = int(body.get("rows", 0))
    except (TypeError, ValueError):
        rows = 0
    if not 1 <= rows <= MAX_ROWS:
        return JsonResponse({"error": f"rows must be between 1 and {MAX_ROWS}"}, status=400)
    try:
        row_delay_ms = int(body.get("row_delay_ms", 0))
    except (TypeError, ValueError):
        row_delay_ms = -1
    if not 0 <= row_delay_ms <= MAX_ROW_DELAY_MS:
        return JsonResponse({"error": f"row_delay_ms must be between 0 and {MAX_ROW_DELAY_MS}"}, status=400)
    export = Export.objects.create(rows=rows)  # committed (autocommit) before the enqueue
    try:
        task_id = jobs.start_export(export.export_id, rows, row_delay_ms)
    except jetq.StreamFull:
        export.status = Export.Status.REFUSED
        export.save(update_fields=["status"])
        response = JsonResponse({"error": "exports are busy, try again shortly", "export_id": export.export_id}, status=503)
        response["Retry-After"] = "30"
        return response
    except (jetq.Timeout, jetq.NotConnected, jetq.ConnectError):
        # The outcome is unknown (Timeout) or nothing was sent: the row stays "unknown"; a retry
        # of start_export with the same export id is safe (same idempotency key).
        return JsonResponse(
            {"error": "the task queue did not answer; the export may start later", "export_id": export.export_id},
            status=503,
        )
    export.task_id = task_id
    export.status = Export.Status.QUEUED
    export.save(update_fields=["task_id", "status"])
    return JsonResponse(
        {"export_id": export.export_id, "task_id": task_id, "status_url": f"/exports/{export.export_id}/"},
        status=202,
    )


def _progress(status: jetq.TaskStatus) -> Optional[Dict[str, Any]]:
    if status.progress is None:
        return None
    return {"percent": status.progress.percent, "message": status.progress.message}


@require_http_methods(["GET", "DELETE"])
def export(request: HttpRequest, export_id: str) -> HttpResponse:
    """GET: where an export stands. ``status`` is the enqueue outcome while the task is not
    stored (``refused``, ``unknown``), else the task's state from its status record (``queued``,
    ``running``, ``retrying``, ``succeeded``, ``failed``, ``dead``, ``cancelled``), with
    ``progress``, ``attempt``, ``error`` and, once it succeeded, ``result`` and ``csv_url``.

    DELETE: cancels it — ``202 {"outcome": "cancelled"}`` if it had not started (it will not
    run), ``202 {"outcome": "requested"}`` if it runs (it stops at its next row), ``409`` if it
    had finished."""
    row = get_object_or_404(Export, export_id=export_id)
    if request.method == "DELETE":
        return _cancel(row)
    body: Dict[str, Any] = {"export_id": row.export_id, "task_id": row.task_id, "rows": row.rows, "status": row.status}
    if row.status != Export.Status.QUEUED:
        return JsonResponse(body)
    try:
        status = jobs.export_status(row.task_id)
    except (jetq.StatusError, jetq.ConnectError) as err:
        body["status_error"] = str(err)  # the task is queued; we just cannot see further
        return JsonResponse(body)
    if status is None:
        return JsonResponse(body)  # no record yet, or it expired (JETQ_STATUS_TTL)
    body.update(status=status.state.value, attempt=status.attempt, progress=_progress(status))
    if status.error is not None:
        body["error"] = status.error
    if status.state is jetq.TaskState.SUCCEEDED:
        body["result"] = status.result
        body["csv_url"] = f"/exports/{row.export_id}/csv"
    return JsonResponse(body)


@require_GET
def export_events(request: HttpRequest, export_id: str) -> HttpResponse:
    """Server-sent events: one ``data:`` line of JSON (``status``, ``attempt``, ``progress``,
    ``error``, ``result``) per change of the export's status record, pushed by the server as the
    Rust worker writes it, ending after the final state. Each open stream holds one WSGI thread:
    fine for a progress page, use ASGI for thousands of watchers."""
    row = get_object_or_404(Export, export_id=export_id)
    if row.status != Export.Status.QUEUED:
        return JsonResponse({"error": f"the export was never queued ({row.status})"}, status=409)

    def events() -> Iterator[str]:
        try:
            for status in jobs.watch_export(row.task_id, EVENTS_TIMEOUT):
                event: Dict[str, Any] = {"status": status.state.value, "attempt": status.attempt, "progress": _progress(status)}
                if status.error is not None:
                    event["error"] = status.error
                if status.state is jetq.TaskState.SUCCEEDED:
                    event["result"] = status.result
                yield f"data: {json.dumps(event)}\n\n"
        except (jetq.StatusError, jetq.ConnectError) as err:
            yield f"event: error\ndata: {json.dumps({'error': str(err)})}\n\n"

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


def _cancel(row: Export) -> HttpResponse:
    if row.status != Export.Status.QUEUED:
        return JsonResponse({"error": f"the export was never queued ({row.status})"}, status=409)
    try:
        outcome = jobs.cancel_export(row.task_id)
    except jetq.StatusNotFound:
        return JsonResponse({"error": "the export has no status record (expired?)"}, status=404)
    except (jetq.StatusError, jetq.ConnectError) as err:
        return JsonResponse({"error": f"the task queue did not answer: {err}"}, status=503)
    if outcome.already_finished:
        return JsonResponse({"error": f"the export has already finished ({outcome.status.state})"}, status=409)
    return JsonResponse({"export_id": row.export_id, "outcome": outcome.outcome}, status=202)


@require_GET
def export_csv(request: HttpRequest, export_id: str) -> HttpResponse:
    """The finished CSV, read from the artifact store into a spooled temporary file (memory up
    to 1 MiB, then disk) and streamed to the client; 409 until the export has succeeded."""
    row = get_object_or_404(Export, export_id=export_id)
    try:
        status = jobs.export_status(row.task_id) if row.task_id else None
        if status is None or status.state is not jetq.TaskState.SUCCEEDED:
            state = status.state.value if status is not None else row.status
            return JsonResponse({"error": f"the export is not ready ({state})"}, status=409)
        spool = tempfile.SpooledTemporaryFile(max_size=1 << 20)
        try:
            jobs.export_csv_to(row.task_id, spool)
        except BaseException:
            spool.close()
            raise
    except jetq.ArtifactNotFound:
        return JsonResponse({"error": "the CSV is gone (expired)"}, status=410)
    except (jetq.StatusError, jetq.ConnectError) as err:
        return JsonResponse({"error": f"the task queue did not answer: {err}"}, status=503)
    spool.seek(0)
    return FileResponse(spool, as_attachment=True, filename=f"{row.export_id}.csv", content_type="text/csv")
