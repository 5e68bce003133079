"""The pure wire pieces: ids, timestamps, payload encoding, option conversions."""

from __future__ import annotations

import datetime as dt
import re
import time

import pytest

from jetq import InvalidOption, NotSupported, SerializeError
from jetq.protocol import (
    ENQUEUED_AT,
    MSG_ID,
    Subjects,
    encode_args,
    format_timestamp,
    header_block_size,
    new_ulid,
    prepare,
    timeout_ms,
)

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def test_ulids_are_unique_and_sort_by_time() -> None:
    ids = [new_ulid() for _ in range(1000)]
    assert all(ULID.match(i) for i in ids)
    assert len(set(ids)) == 1000
    earlier, later = new_ulid(1_700_000_000.0), new_ulid(1_700_000_001.0)
    assert earlier[:10] < later[:10], "the first 10 characters are the timestamp"
    # The Rust ulid crate's encoding of this instant starts the same way.
    assert new_ulid(0.0).startswith("0000000000")


def test_timestamps_are_rfc3339_utc_with_microseconds() -> None:
    at = dt.datetime(2026, 11, 27, 8, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert format_timestamp(at) == "2026-11-27T07:00:00.123456Z"
    now = format_timestamp()
    parsed = dt.datetime.strptime(now, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    assert abs(parsed.timestamp() - time.time()) < 5


def test_payload_is_compact_utf8_json() -> None:
    assert encode_args("t", {"a": 1, "b": [True, None]}) == b'{"a":1,"b":[true,null]}'
    assert encode_args("t", {"s": "caf\u00e9"}) == '{"s":"caf\u00e9"}'.encode("utf-8")
    assert encode_args("t", None) == b"null"
    with pytest.raises(SerializeError) as caught:
        encode_args("send_email", {"x": {1, 2}})
    assert caught.value.task == "send_email"
    with pytest.raises(SerializeError):
        encode_args("t", float("inf"))


def test_timeouts_become_whole_milliseconds_rounded_down() -> None:
    assert timeout_ms(1.5) == 1500
    assert timeout_ms(30) == 30000
    assert timeout_ms(dt.timedelta(microseconds=1_500_999)) == 1500
    assert timeout_ms(0.0001) == 1, "a positive timeout is never sent as 0"
    assert timeout_ms(1.001) == 1001, "no binary floating-point surprise"
    for bad in (0, -1, dt.timedelta(0), True, "1s", float("nan")):
        with pytest.raises(InvalidOption):
            timeout_ms(bad)  # type: ignore[arg-type]


def test_prepare_builds_the_documented_headers() -> None:
    prepared = prepare(Subjects(), "emails", "send_email", {"to": "a@example.com"}, key="k-1", max_attempts=4)
    assert prepared.subject == "jetq.task.emails.send_email"
    assert prepared.id == "k-1"
    assert list(prepared.headers) == [MSG_ID, ENQUEUED_AT, "Jetq-Max-Attempts"]
    assert prepared.headers["Jetq-Max-Attempts"] == "4"
    fresh = prepare(Subjects(), "emails", "send_email", {})
    assert ULID.match(fresh.id) and fresh.headers[MSG_ID] == fresh.id
    state_only = prepare(Subjects(), "q", "t", {}, tracestate="a=b")
    assert "tracestate" not in state_only.headers, "tracestate only travels with a traceparent"


def test_traceparent_validation() -> None:
    from jetq.protocol import is_valid_traceparent

    assert is_valid_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    assert is_valid_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future")
    for bad in ("", "garbage", "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
                "00-" + "0" * 32 + "-b7ad6b7169203331-01", "00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01",
                "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra"):  # fmt: skip
        assert not is_valid_traceparent(bad), bad
    with pytest.raises(InvalidOption):
        prepare(Subjects(), "q", "t", {}, traceparent="garbage")


def test_delay_is_not_supported_until_the_protocol_defines_it() -> None:
    with pytest.raises(NotSupported) as caught:
        prepare(Subjects(), "q", "t", {}, delay=dt.timedelta(minutes=5))
    assert caught.value.feature == "delay"
    assert "PROTOCOL.md" in str(caught.value)


def test_header_block_size_counts_the_wire_bytes() -> None:
    headers = {"Nats-Msg-Id": "abc", "X": "y"}
    wire = b"NATS/1.0\r\nNats-Msg-Id: abc\r\nX: y\r\n\r\n"
    assert header_block_size(headers) == len(wire)
