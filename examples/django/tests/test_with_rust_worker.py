"""The Django views with the real Rust worker of examples/ (``cargo run -p jetq-examples --bin
worker``): an export enqueued by Django is run by the Rust worker, its status and progress are
read back through the view, its CSV is downloaded from the artifact store, and a running export
is cancelled. The binary is ``$JETQ_TEST_EXAMPLE_WORKER_BIN`` (``scripts/test.sh`` builds it),
else it is built with cargo.

The signup's welcome email goes through the outbox: with the real ``jetq-relay``
(``$JETQ_TEST_RELAY_BIN``, else built with cargo) on the test database and the worker mailing
to an SMTP sink, the email is sent once the signup commits, never while its transaction is
open, and never for a rolled-back signup."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
from aiosmtpd.controller import Controller
from django.db import connections, transaction
from django.test import Client

import jetq
from jetq.django.models import OutboxMessage
from jetq.testing import NatsServer, RunningBinary, cargo_binary, free_port
from shop import jobs, views
from shop.models import Member

REPO = Path(__file__).resolve().parents[3]
#: The longest an export may take in these tests.
WAIT = 60.0


@pytest.fixture(scope="session")
def example_worker_binary() -> str:
    try:
        return cargo_binary("jetq-examples", "worker", REPO, "JETQ_TEST_EXAMPLE_WORKER_BIN")
    except RuntimeError as err:
        pytest.fail(f"{err}\n(these tests run the Rust example worker)")


@pytest.fixture
def rust_worker(nats_server: NatsServer, example_worker_binary: str) -> Iterator[RunningBinary]:
    """The example worker on the test server; it provisions the streams at startup."""
    port = free_port()
    env = {
        "JETQ_NATS_URL": nats_server.url,
        "JETQ_HEALTH_LISTEN": f"127.0.0.1:{port}",
        "JETQ_FETCH_EXPIRES": "500ms",
        "SMTP_PORT": str(free_port()),  # no email is sent by these tests
    }
    with RunningBinary(example_worker_binary, env, ready_url=f"http://127.0.0.1:{port}/readyz") as worker:
        yield worker


def until(what: str, check: Callable[[], Optional[Dict[str, Any]]], limit: float = WAIT) -> Dict[str, Any]:
    """Re-checks every 50 ms until ``check`` returns a value; fails after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {limit}s waiting for {what}")
        time.sleep(0.05)


def test_an_export_enqueued_by_django_is_run_by_the_rust_worker_and_downloaded(rust_worker: RunningBinary) -> None:
    client = Client()
    created = client.post("/exports/", {"rows": 500})
    assert created.status_code == 202, created.content
    export_id, task_id = created.json()["export_id"], created.json()["task_id"]

    done = jobs.producer().wait(task_id, WAIT)  # pushed by the server: no polling
    assert done.state is jetq.TaskState.SUCCEEDED, done
    status = client.get(f"/exports/{export_id}/").json()
    assert status["status"] == "succeeded" and status["attempt"] == 1
    assert status["progress"]["percent"] == 100.0 and status["progress"]["message"] == "500 of 500 rows"
    assert status["result"]["rows"] == 500
    assert status["csv_url"] == f"/exports/{export_id}/csv"

    download = client.get(status["csv_url"])
    assert download.status_code == 200 and download["Content-Type"] == "text/csv"
    assert f'filename="{export_id}.csv"' in download["Content-Disposition"]
    content = b"".join(download.streaming_content)  # type: ignore[attr-defined]
    lines = content.decode().splitlines()
    assert lines[0] == "row,customer,amount_cents" and len(lines) == 501
    assert lines[1] == "1,customer-0001,7919" and lines[500] == "500,customer-0500,59500"
    assert len(content) == status["result"]["bytes"], "the artifact the worker stored, byte for byte"
    rust_worker.check_alive()


def test_the_events_stream_pushes_progress_until_the_export_succeeds(rust_worker: RunningBinary) -> None:
    client = Client()
    created = client.post("/exports/", {"rows": 200, "row_delay_ms": 10})  # about 2 s
    export_id = created.json()["export_id"]
    response = client.get(f"/exports/{export_id}/events")
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    events = []
    for chunk in response.streaming_content:  # type: ignore[attr-defined]
        text = chunk.decode() if isinstance(chunk, bytes) else chunk
        assert text.startswith("data: ") and text.endswith("\n\n"), text
        events.append(json.loads(text[len("data: ") :]))
    assert events[-1]["status"] == "succeeded" and events[-1]["result"]["rows"] == 200
    percents = [e["progress"]["percent"] for e in events if e["status"] == "running" and e["progress"]]
    assert len(percents) >= 2, f"progress arrives while it runs: {events}"
    assert percents == sorted(percents), "in order"


def test_a_running_export_is_cancelled_from_django(rust_worker: RunningBinary) -> None:
    client = Client()
    # 1000 rows, 20 ms each: about 20 s unless cancelled.
    created = client.post("/exports/", {"rows": 1000, "row_delay_ms": 20})
    assert created.status_code == 202, created.content
    export_id, task_id = created.json()["export_id"], created.json()["task_id"]

    def running() -> Optional[Dict[str, Any]]:
        body = client.get(f"/exports/{export_id}/").json()
        return body if body["status"] == "running" and body["progress"] is not None else None

    until("the export to run and report progress", running)
    cancelled = client.delete(f"/exports/{export_id}/")
    assert cancelled.status_code == 202 and cancelled.json()["outcome"] == "requested", cancelled.content
    done = jobs.producer().wait(task_id, WAIT)
    assert done.state is jetq.TaskState.CANCELLED, done
    assert done.progress is not None and done.progress.percent < 100, "it stopped early"
    assert client.get(f"/exports/{export_id}/").json()["status"] == "cancelled"
    assert client.get(f"/exports/{export_id}/csv").status_code == 409


class SmtpSink:
    """An SMTP server on a free loopback port recording each message's recipients (aiosmtpd)."""

    def __init__(self) -> None:
        self.recipients: List[str] = []
        self._changed = threading.Condition()
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        with self._changed:
            self.recipients.extend(envelope.rcpt_tos)
            self._changed.notify_all()
        return "250 OK"

    def wait_for(self, recipient: str, limit: float = WAIT) -> None:
        """Returns once a message to ``recipient`` arrived; fails the test after ``limit`` s."""
        with self._changed:
            if not self._changed.wait_for(lambda: recipient in self.recipients, timeout=limit):
                pytest.fail(f"no email to {recipient} within {limit}s (got {self.recipients})")

    def stop(self) -> None:
        self._controller.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def mailing_worker(nats_server: NatsServer, example_worker_binary: str, smtp: SmtpSink) -> Iterator[RunningBinary]:
    """The example worker, sending its emails to the SMTP sink."""
    port = free_port()
    env = {
        "JETQ_NATS_URL": nats_server.url,
        "JETQ_HEALTH_LISTEN": f"127.0.0.1:{port}",
        "JETQ_FETCH_EXPIRES": "500ms",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp.port),
    }
    with RunningBinary(example_worker_binary, env, ready_url=f"http://127.0.0.1:{port}/readyz") as worker:
        yield worker


@pytest.fixture(scope="session")
def relay_binary() -> str:
    try:
        return cargo_binary("jetq-outbox", "jetq-relay", REPO, "JETQ_TEST_RELAY_BIN")
    except RuntimeError as err:
        pytest.fail(f"{err}\n(these tests run the outbox relay)")


@pytest.fixture
def relay(nats_server: NatsServer, mailing_worker: RunningBinary, relay_binary: str, database_url: str) -> Iterator[RunningBinary]:
    """jetq-relay on the test database and server (started after the worker provisioned the
    task stream)."""
    port = free_port()
    env = {
        "JETQ_NATS_URL": nats_server.url,
        "JETQ_DATABASE_URL": database_url,
        "JETQ_HEALTH_LISTEN": f"127.0.0.1:{port}",
    }
    with RunningBinary(relay_binary, env, ready_url=f"http://127.0.0.1:{port}/readyz") as running:
        yield running


def sign_up_in_another_thread(email: str) -> int:
    """POSTs a signup from a thread of its own: its own database connection, so its own
    transaction, which commits while the caller's may still be open. Returns the status code."""
    codes: List[int] = []

    def post() -> None:
        try:
            codes.append(Client().post("/signup/", {"email": email}).status_code)
        finally:
            connections.close_all()  # this thread's connection, or the test database cannot be dropped

    thread = threading.Thread(target=post)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), "the signup did not finish"
    [code] = codes
    return code


def test_the_welcome_email_is_sent_only_once_the_signup_commits(relay: RunningBinary, smtp: SmtpSink) -> None:
    with transaction.atomic():
        member = Member.objects.create(email="held@example.com")
        jobs.enqueue_welcome_email(member.pk, member.email, "")
        # Another signup commits meanwhile; its email goes all the way through relay and worker
        # (the relay is awake and working), while ours waits for our commit.
        assert sign_up_in_another_thread("first@example.com") == 201
        smtp.wait_for("first@example.com")
        assert "held@example.com" not in smtp.recipients, "not before the commit"
    smtp.wait_for("held@example.com")
    until("the relay to delete the relayed rows", lambda: {} if not OutboxMessage.objects.exists() else None)
    assert sorted(smtp.recipients) == ["first@example.com", "held@example.com"], "each email once"
    relay.check_alive()


def test_a_rolled_back_signup_sends_no_email(relay: RunningBinary, smtp: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(member: Member) -> None:
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr(views, "record_signup", fail)
    response = Client(raise_request_exception=False).post("/signup/", {"email": "rolled-back@example.com"})
    assert response.status_code == 500
    monkeypatch.undo()
    # A later signup's email arrives: had the rolled-back one been relayed, it would be there too
    # (the relay publishes oldest first).
    assert Client().post("/signup/", {"email": "after@example.com"}).status_code == 201
    smtp.wait_for("after@example.com")
    assert smtp.recipients == ["after@example.com"]
    relay.check_alive()
