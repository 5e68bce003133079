"""The shop's views through Django's test client, against a real nats-server and PostgreSQL: the
signup's outbox row (subject, headers, payload) written in the signup transaction, and what
lands in the JETQ_TASKS stream for an export."""

from __future__ import annotations

import json
import re
from typing import Any, List

import pytest
from django.db import transaction
from django.test import Client

from jetq.django.models import OutboxMessage
from jetq.testing import NatsServer, create_task_stream_sync, stored_tasks_sync
from shop import jobs, views
from shop.models import Export, Member

ENQUEUED_AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_the_signup_form_renders() -> None:
    response = Client().get("/signup/")
    assert response.status_code == 200
    assert b'name="csrfmiddlewaretoken"' in response.content


def test_signup_writes_the_welcome_email_into_the_outbox(nats_server: NatsServer, task_stream: str) -> None:
    response = Client().post("/signup/", {"email": "Ada@Example.com", "name": "Ada"})
    assert response.status_code == 201, response.content
    member = Member.objects.get()
    assert member.email == "ada@example.com"

    [row] = OutboxMessage.objects.all()
    assert row.msg_id == f"welcome-email-{member.pk}"
    assert row.subject == "jetq.task.emails.send_email"
    assert set(row.headers) == {"Jetq-Enqueued-At"} and ENQUEUED_AT.match(row.headers["Jetq-Enqueued-At"])
    assert json.loads(bytes(row.payload)) == {
        "to": "ada@example.com",
        "subject": "Welcome to the shop",
        "body": "Hi Ada,\n\nthanks for signing up.\n",
    }
    assert stored_tasks_sync(nats_server.url) == [], "the view does not publish: jetq-relay does, after the commit"


def test_the_email_is_written_inside_the_signup_transaction(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: List[Any] = []
    real = jobs.enqueue_welcome_email

    def spy(member_id: int, email: str, name: str) -> str:
        seen.append(transaction.get_connection().in_atomic_block)
        return real(member_id, email, name)

    monkeypatch.setattr(jobs, "enqueue_welcome_email", spy)
    assert Client().post("/signup/", {"email": "grace@example.com"}).status_code == 201
    assert seen == [True]
    assert OutboxMessage.objects.count() == 1


def test_a_rolled_back_signup_enqueues_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(member: Member) -> None:
        raise RuntimeError("audit log unavailable")

    # The failure comes after the email was written, inside the same transaction.
    monkeypatch.setattr(views, "record_signup", fail)
    response = Client(raise_request_exception=False).post("/signup/", {"email": "linus@example.com"})
    assert response.status_code == 500
    assert not Member.objects.exists(), "the transaction was rolled back"
    assert not OutboxMessage.objects.exists(), "and the welcome email with it"


def test_a_second_signup_is_refused_and_enqueues_once() -> None:
    client = Client()
    assert client.post("/signup/", {"email": "barbara@example.com"}).status_code == 201
    assert client.post("/signup/", {"email": "barbara@example.com"}).status_code == 409
    assert OutboxMessage.objects.count() == 1


def test_invalid_email_is_a_400() -> None:
    assert Client().post("/signup/", {"email": "not an address"}).status_code == 400
    assert not OutboxMessage.objects.exists()


def test_with_nats_down_the_signup_succeeds_and_the_email_is_kept(nats_server: NatsServer, task_stream: str) -> None:
    """What the outbox adds over on_commit: NATS being down does not lose the email — it waits
    in the committed outbox row until jetq-relay can publish it."""
    nats_server.kill()
    response = Client().post("/signup/", {"email": "margaret@example.com"})
    assert response.status_code == 201
    member = Member.objects.get()
    assert OutboxMessage.objects.get().msg_id == f"welcome-email-{member.pk}"


def test_export_answers_with_the_id_of_the_stored_task(nats_server: NatsServer, task_stream: str) -> None:
    response = Client().post("/exports/", json.dumps({"rows": 250}), content_type="application/json")
    assert response.status_code == 202, response.content
    body = response.json()
    export = Export.objects.get()
    assert body["export_id"] == export.export_id and body["task_id"] == export.task_id
    assert export.status == Export.Status.QUEUED

    [task] = stored_tasks_sync(nats_server.url)
    assert task.subject == "jetq.task.exports.generate_csv"
    assert task.headers["Nats-Msg-Id"] == body["task_id"] == f"export-{export.export_id}"
    assert ENQUEUED_AT.match(task.headers["Jetq-Enqueued-At"])
    assert json.loads(task.payload) == {"export_id": export.export_id, "rows": 250, "row_delay_ms": 0}
    assert task.headers["Jetq-Track-Status"] == "1"


def test_export_status_comes_from_the_tasks_status_record_and_cancel_works(nats_server: NatsServer, task_stream: str) -> None:
    client = Client()
    created = client.post("/exports/", {"rows": 3}).json()
    export_id, task_id = created["export_id"], created["task_id"]
    [task] = stored_tasks_sync(nats_server.url)
    assert task.headers["Jetq-Track-Status"] == "1", "exports are tracked"

    status = client.get(f"/exports/{export_id}/").json()
    assert status == {"export_id": export_id, "task_id": task_id, "rows": 3, "status": "queued", "attempt": 0, "progress": None}
    assert client.get(f"/exports/{export_id}/csv").status_code == 409, "not ready"

    cancelled = client.delete(f"/exports/{export_id}/")
    assert cancelled.status_code == 202 and cancelled.json()["outcome"] == "cancelled"
    assert client.get(f"/exports/{export_id}/").json()["status"] == "cancelled"
    again = client.delete(f"/exports/{export_id}/")
    assert again.status_code == 409 and "cancelled" in again.json()["error"]
    assert client.get("/exports/exp_missing/").status_code == 404
    assert client.delete("/exports/exp_missing/").status_code == 404
    # The events stream of a finished export: its last state, then the end.
    events = client.get(f"/exports/{export_id}/events")
    assert events["Content-Type"] == "text/event-stream"
    chunks = [c.decode() if isinstance(c, bytes) else c for c in events.streaming_content]  # type: ignore[attr-defined]
    assert [json.loads(c[len("data: ") :]) for c in chunks] == [{"status": "cancelled", "attempt": 0, "progress": None}]


def test_an_export_that_was_never_queued_reports_its_enqueue_outcome(nats_server: NatsServer, task_stream: str) -> None:
    export = Export.objects.create(rows=4, status=Export.Status.REFUSED)
    client = Client()
    assert client.get(f"/exports/{export.export_id}/").json()["status"] == "refused"
    assert client.delete(f"/exports/{export.export_id}/").status_code == 409
    assert client.get(f"/exports/{export.export_id}/csv").status_code == 409


def test_a_full_queue_answers_503_and_marks_the_export_refused(nats_server: NatsServer) -> None:
    create_task_stream_sync(nats_server.url, max_msgs=1)
    client = Client()
    assert client.post("/exports/", {"rows": 1}).status_code == 202
    response = client.post("/exports/", {"rows": 2})
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    refused = Export.objects.get(rows=2)
    assert refused.status == Export.Status.REFUSED and refused.task_id == ""
    assert len(stored_tasks_sync(nats_server.url)) == 1


def test_export_with_nats_down_answers_503_and_keeps_the_row(nats_server: NatsServer, task_stream: str) -> None:
    nats_server.kill()
    response = Client().post("/exports/", {"rows": 5})
    assert response.status_code == 503
    assert Export.objects.get().status == Export.Status.UNKNOWN


@pytest.mark.parametrize("rows", ["0", "-3", "lots", "1000001"])
def test_export_rejects_bad_row_counts(rows: str) -> None:
    assert Client().post("/exports/", {"rows": rows}).status_code == 400
    assert not Export.objects.exists()


@pytest.mark.parametrize("delay", ["-1", "soon", "1001"])
def test_export_rejects_bad_row_delays(delay: str) -> None:
    assert Client().post("/exports/", {"rows": "3", "row_delay_ms": delay}).status_code == 400
    assert not Export.objects.exists()
