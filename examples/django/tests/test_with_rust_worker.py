"""The Django views with the real Rust worker of examples/ (``cargo run -p jetq-examples --bin
worker``): an export enqueued by Django is run by the Rust worker, its status and progress are
read back through the view, its CSV is downloaded from the artifact store, and a running export
is cancelled. The binary is ``$JETQ_TEST_EXAMPLE_WORKER_BIN`` (``scripts/test.sh`` builds it),
else it is built with cargo."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional

import pytest
from django.test import Client

import jetq
from jetq.testing import NatsServer, RunningBinary, cargo_binary, free_port
from shop import jobs

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
