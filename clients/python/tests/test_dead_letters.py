"""The Python dead-letter reader against docs/conformance/dead_letters.json, the vectors the
Rust reader and writer are held to (contract/tests/dead_letter_vectors.rs)."""

import json
import os
from typing import Any, Dict

import pytest

from jetq.dead_letters import DEAD_LETTER_HEADERS, read_dead_letter_headers

VECTORS_PATH = os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "docs", "conformance", "dead_letters.json"
)


def load() -> Dict[str, Any]:
    with open(VECTORS_PATH, encoding="utf-8") as handle:
        data: Dict[str, Any] = json.load(handle)
    return data


VECTORS = load()


@pytest.mark.parametrize("vector", VECTORS["read"], ids=lambda v: v["name"])
def test_read_vectors(vector: Dict[str, Any]) -> None:
    assert read_dead_letter_headers(vector["headers"]).as_dict() == vector["expected"]


@pytest.mark.parametrize("vector", VECTORS["write"], ids=lambda v: v["name"])
def test_what_a_worker_writes_reads_back_as_its_record(vector: Dict[str, Any]) -> None:
    # Python writes no dead letters; it must read every letter a worker writes.
    assert read_dead_letter_headers(vector["headers"]).as_dict() == vector["record"]


def test_the_vectors_cover_refusals_and_the_header_list_is_the_protocols() -> None:
    names = {vector["name"] for vector in VECTORS["read"]}
    assert {"attempts_not_a_number", "failure_not_json", "no_dead_letter_headers"} <= names
    assert DEAD_LETTER_HEADERS == (
        "Jetq-Task-Id",
        "Jetq-Dead-Reason",
        "Jetq-Attempts",
        "Jetq-Dead-At",
        "Jetq-Task-Sequence",
        "Jetq-Failure",
        "Jetq-Payload-Object",
        "Jetq-Payload-Size",
    )


@pytest.mark.parametrize(
    "attempts, expected",
    [("+3", 3), ("1_000", None), ("３", None), ("3.0", None), ("", None)],
)
def test_attempts_parse_as_the_rust_reader_parses_them(attempts: str, expected: Any) -> None:
    assert read_dead_letter_headers({"Jetq-Attempts": attempts}).attempts == expected


def test_a_failure_record_with_a_float_or_bool_count_is_not_read() -> None:
    base = {"reason": "fatal", "error": "e", "history": [], "dead_at": "2026-11-27T07:00:00Z"}
    for attempts in (3.0, True):
        text = json.dumps({**base, "attempts": attempts})
        assert read_dead_letter_headers({"Jetq-Failure": text}).failure is None
    ok = read_dead_letter_headers({"Jetq-Failure": json.dumps({**base, "attempts": 1})})
    assert ok.failure is not None and ok.failure["enqueued_at"] is None
