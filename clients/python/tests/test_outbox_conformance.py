"""The shared outbox vectors (docs/conformance/outbox.json, also checked by the Rust
jetq-outbox tests): every ``writes`` enqueue, through jetq.outbox on a real PostgreSQL, leaves
exactly the row the vector gives; every ``invalid_writes`` enqueue is refused with its error
kind before anything is written; the vectors' schema file is the one the Python side creates."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict

import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider

from jetq import Config, errors
from jetq.outbox import Outbox
from jetq.outbox_schema import DEFAULT_TABLE, MIGRATION_0001
from jetq.protocol import parse_timestamp

from .test_outbox_schema import normalized

REPO = Path(__file__).resolve().parents[3]
VECTORS: Dict[str, Any] = json.loads((REPO / "docs" / "conformance" / "outbox.json").read_text(encoding="utf-8"))
ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
#: The vectors' delayed task is due in 2030, years past the default maximum delay (30 days).
WRITER = Outbox(Config(max_delay=20 * 365 * 24 * 3600.0))


def enqueue_options(enqueue: Dict[str, Any]) -> Dict[str, Any]:
    """A vector's enqueue as keyword arguments of Outbox.enqueue."""
    options: Dict[str, Any] = {}
    for name in ("key", "max_attempts", "track_status", "priority"):
        if name in enqueue:
            options[name] = enqueue[name]
    if "timeout_ms" in enqueue:
        options["timeout"] = enqueue["timeout_ms"] / 1000
    if "due" in enqueue:
        options["at"] = parse_timestamp(enqueue["due"])
    known = {"queue", "task", "args", "key", "max_attempts", "track_status", "timeout_ms", "due", "priority"}
    assert set(enqueue) <= known, f"a vector field this test does not know: {set(enqueue) - known}"
    return options


def test_the_vectors_describe_the_schema_and_names_python_creates() -> None:
    assert VECTORS["table"] == VECTORS["notify_channel"] == DEFAULT_TABLE
    assert VECTORS["prefix"] == "jetq"
    canonical = (REPO / VECTORS["schema_file"]).read_text(encoding="utf-8")
    assert normalized(" ".join(MIGRATION_0001)) == normalized(canonical)


@pytest.mark.parametrize("traced", [False, True], ids=["untraced", "traced"])
@pytest.mark.parametrize("vector", VECTORS["writes"], ids=lambda v: v["name"])
def test_a_write_leaves_the_row_of_the_vector(outbox_dsn: str, vector: Dict[str, Any], traced: bool) -> None:
    enqueue = vector["enqueue"]
    provider = TracerProvider()
    with psycopg.connect(outbox_dsn) as conn:
        if traced:
            with provider.get_tracer("vectors").start_as_current_span("request"):
                task_id = WRITER.enqueue(conn, enqueue["queue"], enqueue["task"], enqueue["args"], **enqueue_options(enqueue))
        else:
            task_id = WRITER.enqueue(conn, enqueue["queue"], enqueue["task"], enqueue["args"], **enqueue_options(enqueue))
    provider.shutdown()
    with psycopg.connect(outbox_dsn) as conn:
        [(msg_id, subject, headers, payload)] = conn.execute("SELECT msg_id, subject, headers, payload FROM jetq_outbox").fetchall()
    expected = vector["row"]
    if expected["msg_id"] == "ulid":
        assert ULID.fullmatch(msg_id), msg_id
    else:
        assert msg_id == expected["msg_id"]
    assert msg_id == task_id
    assert subject == expected["subject"]
    if traced:
        assert set(headers) - set(expected["headers"]) == {"traceparent"}, "a trace is active: traceparent, nothing else"
        headers = {k: v for k, v in headers.items() if k != "traceparent"}
    assert set(headers) == set(expected["headers"])
    for name, value in expected["headers"].items():
        if value == "<rfc3339>":
            assert TIMESTAMP.fullmatch(headers[name]), (name, headers[name])
        else:
            assert headers[name] == value, name
    assert json.loads(bytes(payload)) == json.loads(expected["payload"])


@pytest.mark.parametrize("vector", VECTORS["invalid_writes"], ids=lambda v: v["name"])
def test_an_invalid_write_is_refused_before_writing(outbox_dsn: str, vector: Dict[str, Any]) -> None:
    enqueue = vector["enqueue"]
    error = getattr(errors, vector["error"])
    with psycopg.connect(outbox_dsn) as conn:
        with pytest.raises(error):
            WRITER.enqueue(conn, enqueue["queue"], enqueue["task"], enqueue["args"], **enqueue_options(enqueue))
        assert conn.info.transaction_status is psycopg.pq.TransactionStatus.IDLE, "no statement was sent"
        assert conn.execute("SELECT count(*) FROM jetq_outbox").fetchone() == (0,)
