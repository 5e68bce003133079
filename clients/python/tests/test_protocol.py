"""The pure wire pieces: ids, timestamps, payload encoding, option conversions."""

from __future__ import annotations

import datetime as dt
import re
import time

import pytest

from jetq import DelayTooLong, InvalidName, InvalidOption, SerializeError
from jetq.protocol import (
    ENQUEUED_AT,
    MSG_ID,
    Subjects,
    encode_args,
    format_timestamp,
    header_block_size,
    new_ulid,
    parse_timestamp,
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


T0 = dt.datetime(2026, 11, 27, 7, 0, 0, 250000, tzinfo=dt.timezone.utc)


def test_a_delayed_task_goes_to_its_due_second_with_jetq_not_before() -> None:
    # docs/PROTOCOL.md §7: subject <prefix>.delayed.<due unix second>.<queue>.<task>, header
    # Jetq-Not-Before whose second is the subject's, everything else as an immediate task.
    prepared = prepare(Subjects(), "emails", "send_email", {"to": "a"}, delay=1.8, now=T0, key="k1")
    due = T0 + dt.timedelta(seconds=1.8)  # 07:00:02.050000
    assert prepared.headers["Jetq-Not-Before"] == "2026-11-27T07:00:02.050000Z"
    assert prepared.subject == f"jetq.delayed.{int(due.timestamp())}.emails.send_email"
    assert prepared.subject == "jetq.delayed.1795762802.emails.send_email"
    assert prepared.delayed and prepared.not_before == prepared.headers["Jetq-Not-Before"]
    assert prepared.headers["Nats-Msg-Id"] == "k1" and not prepared.generated_id
    assert list(prepared.headers) == ["Nats-Msg-Id", "Jetq-Enqueued-At", "Jetq-Not-Before"]
    assert prepared.payload == b'{"to":"a"}'
    # The subject's second and the header's second agree whatever the fraction.
    for micros in (0, 1, 999_999):
        at = T0.replace(microsecond=micros) + dt.timedelta(hours=1)
        p = prepare(Subjects("my-app"), "q", "t", None, at=at, now=T0)
        second = p.subject.split(".")[2]
        header = parse_timestamp(p.headers["Jetq-Not-Before"])
        assert header is not None and int(header.timestamp()) == int(second) == int(at.timestamp())
        assert p.subject.startswith("my-app.delayed.") and p.subject.endswith(".q.t")


def test_at_accepts_any_aware_timezone_and_refuses_naive_datetimes() -> None:
    berlin = dt.timezone(dt.timedelta(hours=1))
    at = dt.datetime(2026, 11, 27, 9, 0, tzinfo=berlin)  # 08:00 UTC
    p = prepare(Subjects(), "q", "t", {}, at=at, now=T0)
    assert p.headers["Jetq-Not-Before"] == "2026-11-27T08:00:00.000000Z"
    with pytest.raises(InvalidOption) as caught:
        prepare(Subjects(), "q", "t", {}, at=dt.datetime(2026, 11, 27, 9, 0), now=T0)
    assert caught.value.option == "at" and "naive" in str(caught.value)
    with pytest.raises(InvalidOption):
        prepare(Subjects(), "q", "t", {}, at="2026-11-27T09:00:00Z", now=T0)  # type: ignore[arg-type]


def test_a_due_time_already_past_or_a_zero_delay_is_an_ordinary_task() -> None:
    for options in ({"delay": 0}, {"delay": dt.timedelta(0)}, {"at": T0}, {"at": T0 - dt.timedelta(days=3)}):
        p = prepare(Subjects(), "q", "t", {}, now=T0, **options)  # type: ignore[arg-type]
        assert p.subject == "jetq.task.q.t", options
        assert "Jetq-Not-Before" not in p.headers and not p.delayed


def test_delays_above_the_maximum_are_refused_before_sending() -> None:
    thirty_days = dt.timedelta(days=30)
    ok = prepare(Subjects(), "q", "t", {}, delay=thirty_days, now=T0)
    assert ok.headers["Jetq-Not-Before"] == format_timestamp(T0 + thirty_days)
    for options in ({"delay": thirty_days + dt.timedelta(microseconds=1)},
                    {"delay": 31 * 24 * 3600}, {"at": T0 + dt.timedelta(days=31)}, {"delay": 1e300}):  # fmt: skip
        with pytest.raises(DelayTooLong) as caught:
            prepare(Subjects(), "q", "t", {}, now=T0, **options)  # type: ignore[arg-type]
        assert caught.value.max_delay == thirty_days and caught.value.task == "t"
        assert "maximum delay is 30 days" in str(caught.value)
    # A producer's own maximum.
    with pytest.raises(DelayTooLong):
        prepare(Subjects(), "q", "t", {}, delay=61, now=T0, max_delay=dt.timedelta(minutes=1))
    # Names are still checked first, so a bad name is reported as such.
    with pytest.raises(InvalidName):
        prepare(Subjects(), "q", "bad.name", {}, delay=dt.timedelta(days=90), now=T0)


def test_bad_delays_are_invalid_options() -> None:
    for bad in (-1, dt.timedelta(seconds=-1), float("nan"), float("inf"), "5s", True):
        with pytest.raises(InvalidOption) as caught:
            prepare(Subjects(), "q", "t", {}, delay=bad, now=T0)  # type: ignore[arg-type]
        assert caught.value.option == "delay", bad
    with pytest.raises(InvalidOption) as both:
        prepare(Subjects(), "q", "t", {}, delay=5, at=T0 + dt.timedelta(hours=1), now=T0)
    assert "not both" in str(both.value)


def test_track_status_sends_the_opt_in_header() -> None:
    p = prepare(Subjects(), "q", "t", {}, track_status=True)
    assert p.headers["Jetq-Track-Status"] == "1" and p.tracked
    assert "Jetq-Track-Status" not in prepare(Subjects(), "q", "t", {}).headers
    assert prepare(Subjects(), "q", "t", {}).generated_id


def test_timestamps_written_by_rust_parse() -> None:
    assert parse_timestamp("2026-11-27T07:00:00Z") == T0.replace(microsecond=0)
    assert parse_timestamp("2026-11-27T07:00:00.25Z") == T0
    assert parse_timestamp("2026-11-27T08:00:00.250000123+01:00") == T0
    for bad in ("", "yesterday", "2026-11-27T07:00:00"):
        assert parse_timestamp(bad) is None, bad


def test_header_block_size_counts_the_wire_bytes() -> None:
    headers = {"Nats-Msg-Id": "abc", "X": "y"}
    wire = b"NATS/1.0\r\nNats-Msg-Id: abc\r\nX: y\r\n\r\n"
    assert header_block_size(headers) == len(wire)
