"""The two views of the seed scenario.

- ``signup``: creates a member and enqueues the welcome email **after the transaction
  commits** (``transaction.on_commit``);
- ``create_export``: creates an export and enqueues ``generate_csv``, answering with the task id;
  ``export_status`` shows where it stands.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Dict

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_http_methods

import jetq

from . import jobs
from .models import Export, Member, SignupEvent

#: The most rows one export may ask for.
MAX_ROWS = 1_000_000


def record_signup(member: Member) -> None:
    """Writes the signup's audit row (part of the signup transaction)."""
    SignupEvent.objects.create(member=member)


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """GET: the form. POST ``email`` (and ``name``): creates the member and, once that is
    committed, enqueues the welcome email."""
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
            # Runs only if (and after) the transaction commits: a rollback below discards it,
            # so no email goes out for a member who does not exist.
            transaction.on_commit(
                functools.partial(jobs.send_welcome_email, member.pk, member.email, member.name),
                robust=True,
            )
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
    """POST ``rows``: creates an export, enqueues ``generate_csv`` and answers 202 with the task
    id. 503 when the queue is full or NATS does not answer (the export row says which)."""
    try:
        rows = int(_body(request).get("rows", 0))
    except (TypeError, ValueError):
        rows = 0
    if not 1 <= rows <= MAX_ROWS:
        return JsonResponse({"error": f"rows must be between 1 and {MAX_ROWS}"}, status=400)
    export = Export.objects.create(rows=rows)  # committed (autocommit) before the enqueue
    try:
        task_id = jobs.start_export(export.export_id, rows)
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


@require_GET
def export_status(request: HttpRequest, export_id: str) -> HttpResponse:
    """Where an export stands: ``ready`` once the worker wrote ``<EXPORT_DIR>/<export_id>.csv``,
    else the enqueue outcome (``queued``, ``refused``, ``unknown``)."""
    export = get_object_or_404(Export, export_id=export_id)
    path = settings.EXPORT_DIR / f"{export.export_id}.csv"
    status = "ready" if path.is_file() else export.status
    return JsonResponse({"export_id": export.export_id, "task_id": export.task_id, "rows": export.rows, "status": status})
