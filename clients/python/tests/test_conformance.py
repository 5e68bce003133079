"""The Python producer against the shared vectors of docs/conformance/vectors.json (the Rust
producer is held to the same file by tests/tests/conformance.rs)."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any, Dict, List, Optional

import pytest
from opentelemetry import context as otel_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import jetq
from jetq import AsyncProducer, ConfigError, InvalidKey, InvalidName
from jetq.catalog import catalog_bucket, parse_entry
from jetq.errors import EnqueueError
from jetq.producer import Enqueued, is_unavailable, retry_pause
from jetq.message import build_task_message
from jetq.priority import PRIORITY, queue_token, split_queue_token
from jetq.protocol import Subjects, attempt_number, dead_payload_object, format_timestamp, parse_timestamp, prepare
from jetq.status import id_from_key, status_key
from jetq.testing import NatsServer, create_task_stream, stored_tasks

from .support import VECTORS_PATH, load_vectors, config_for, within

VECTORS = load_vectors()
PATTERNS = {name: re.compile(pattern) for name, pattern in VECTORS["patterns"].items()}


def ids(vectors: Any) -> Any:
    return [v["name"] for v in vectors]


def options(vector: Dict[str, Any], *, with_trace: bool = True) -> Dict[str, Any]:
    """The vector's options as keyword arguments of ``enqueue``."""
    opts = vector["options"]
    kwargs: Dict[str, Any] = {}
    if "key" in opts:
        kwargs["key"] = opts["key"]
    if "max_attempts" in opts:
        kwargs["max_attempts"] = opts["max_attempts"]
    if "timeout_us" in opts:
        kwargs["timeout"] = dt.timedelta(microseconds=opts["timeout_us"])
    if with_trace:
        for name in ("traceparent", "tracestate"):
            if name in opts:
                kwargs[name] = opts[name]
    return kwargs


def check_message(vector: Dict[str, Any], subject: str, headers: Dict[str, str], payload: bytes) -> None:
    """Asserts one message is exactly what the vector says."""
    name = vector["name"]
    assert subject == vector["subject"], name
    assert payload == vector["payload"].encode("utf-8"), name
    expected_names = set(vector["headers"]) | set(vector["header_patterns"])
    assert set(headers) == expected_names, f"{name}: header names"
    for header, value in vector["headers"].items():
        assert headers[header] == value, f"{name}: {header}"
    for header, pattern in vector["header_patterns"].items():
        assert PATTERNS[pattern].fullmatch(headers[header]), f"{name}: {header}={headers[header]!r}"


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=ids(VECTORS["valid"]))
def test_valid_vector_is_prepared_exactly(vector: Dict[str, Any]) -> None:
    prepared = prepare(Subjects(vector["prefix"]), vector["queue"], vector["task"], vector["args"], **options(vector))
    check_message(vector, prepared.subject, prepared.headers, prepared.payload)
    assert Subjects(vector["prefix"]).tasks_stream == vector["stream"]


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=ids(VECTORS["invalid"]))
def test_invalid_vector_is_refused_with_the_documented_error(vector: Dict[str, Any]) -> None:
    with pytest.raises((InvalidName, InvalidKey)) as caught:
        prepare(Subjects(), vector["queue"], vector["task"], vector["args"], **options(vector))
    err = caught.value
    assert type(err).__name__ == vector["error"], vector["name"]
    if isinstance(err, InvalidName):
        assert err.kind == vector["name_kind"], vector["name"]
        assert err.reason == vector["reason"], vector["name"]
    else:
        assert isinstance(err, InvalidKey)
        assert err.reason == vector["reason"], vector["name"]


@pytest.mark.parametrize("vector", VECTORS["delayed"], ids=ids(VECTORS["delayed"]))
def test_delayed_vector_is_prepared_exactly(vector: Dict[str, Any]) -> None:
    due = parse_timestamp(vector["due"])
    assert due is not None, vector["name"]
    # Prepared a minute before it is due: a delayed publish.
    prepared = prepare(Subjects(), vector["queue"], vector["task"], {}, at=due, now=due - dt.timedelta(minutes=1))
    assert prepared.subject == vector["subject"], vector["name"]
    assert prepared.headers["Jetq-Not-Before"] == vector["not_before"], vector["name"]


@pytest.mark.parametrize("vector", VECTORS["status_keys"], ids=[repr(v["id"]) for v in VECTORS["status_keys"]])
def test_status_key_vector(vector: Dict[str, Any]) -> None:
    assert status_key(vector["id"]) == vector["key"]
    assert id_from_key(vector["key"]) == vector["id"]


@pytest.mark.parametrize("vector", VECTORS["dead_payload_objects"], ids=[v["object"] for v in VECTORS["dead_payload_objects"]])
def test_dead_payload_object_vector(vector: Dict[str, Any]) -> None:
    assert dead_payload_object(vector["sequence"], vector["task_id"]) == vector["object"]


@pytest.mark.parametrize("vector", VECTORS["attempts"], ids=ids(VECTORS["attempts"]))
def test_attempt_number_vector(vector: Dict[str, Any]) -> None:
    record = vector["record"].encode() if vector["record"] is not None else None
    assert attempt_number(record, vector["delivered"]) == vector["attempt"]


@pytest.mark.parametrize("vector", VECTORS["timestamps"], ids=ids(VECTORS["timestamps"]))
def test_timestamp_vector(vector: Dict[str, Any]) -> None:
    parsed = parse_timestamp(vector["text"])
    if vector["utc"] is None:
        assert parsed is None, vector["name"]
    else:
        assert parsed is not None, vector["name"]
        assert format_timestamp(parsed) == vector["utc"], vector["name"]


class _Reply:
    """A publish reply as nats-py hands it over: headers (None without) and the body."""

    def __init__(self, status: Optional[str], body: str) -> None:
        self.headers = {"Status": status} if status is not None else None
        self.data = body.encode()


@pytest.mark.parametrize("vector", VECTORS["publish_acks"], ids=ids(VECTORS["publish_acks"]))
def test_publish_ack_vector(vector: Dict[str, Any]) -> None:
    prepared = prepare(Subjects(), "emails", "send_email", {"n": 1})
    reader = object.__new__(AsyncProducer)  # _read_ack needs no connection
    try:
        outcome: Any = reader._read_ack(prepared, _Reply(vector["status"], vector["body"]))  # type: ignore[arg-type]
    except EnqueueError as err:
        outcome = err
    if vector["outcome"] == "stored":
        assert isinstance(outcome, Enqueued), vector["name"]
        assert (outcome.sequence, outcome.duplicate) == (vector["sequence"], vector["duplicate"])
    else:
        assert type(outcome).__name__ == vector["error"], vector["name"]
        assert is_unavailable(outcome) == (vector["outcome"] == "retry"), vector["name"]


@pytest.mark.parametrize("vector", VECTORS["retry_pauses"], ids=lambda v: f"budget_{v['budget_ms']}ms")
def test_retry_pauses_vector(vector: Dict[str, Any]) -> None:
    # Replies that come back at once: the time spent is the sum of the pauses so far.
    budget = vector["budget_ms"] / 1000
    pauses = []
    spent = 0.0
    while (pause := retry_pause(len(pauses), budget - spent)) is not None:
        pauses.append(round(pause * 1000))
        spent += pause
    assert pauses == vector["pauses_ms"]


def test_catalog_bucket_vector() -> None:
    assert catalog_bucket(Subjects("jetq")) == VECTORS["catalog"]["bucket"]
    assert len(VECTORS["catalog"]["entries"]) >= 4


@pytest.mark.parametrize("vector", VECTORS["catalog"]["entries"], ids=ids(VECTORS["catalog"]["entries"]))
def test_catalog_entry_vector(vector: Dict[str, Any]) -> None:
    # As tests/tests/conformance.rs: the value reads as the expected entry (or as none), its key
    # is the vector's, and an exact vector is what a writer produces for these fields.
    name = vector["name"]
    entry = parse_entry(vector["value"].encode("utf-8"))
    expected = vector["entry"]
    if expected is None:
        assert entry is None, name
        return
    assert entry is not None, name
    for field in ("queue", "task", "max_attempts", "timeout_ms", "tracked"):
        assert getattr(entry, field) == expected[field], f"{name}: {field}"
    assert entry.key == vector["key"], name
    if vector["exact"]:
        assert entry.to_json() == vector["value"].encode("utf-8"), name


@pytest.mark.parametrize("vector", VECTORS["invalid_prefixes"], ids=ids(VECTORS["invalid_prefixes"]))
def test_invalid_prefix_is_a_configuration_error(vector: Dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        jetq.Config(prefix=vector["prefix"]).validate()
    assert caught.value.field == vector["field"]
    with pytest.raises(ConfigError):
        jetq.Config.from_env({"JETQ_PREFIX": vector["prefix"]} if vector["prefix"] else {"JETQ_PREFIX": " "})


async def test_every_valid_vector_is_stored_exactly(nats_server: NatsServer) -> None:
    """Through a real server: the stored message's subject, payload bytes and headers."""
    producers: Dict[str, AsyncProducer] = {}
    try:
        for vector in VECTORS["valid"]:
            prefix = vector["prefix"]
            if prefix not in producers:
                await within("task stream", create_task_stream(nats_server.url, prefix))
                producers[prefix] = await within(
                    "connect", AsyncProducer.connect(config_for(nats_server, prefix=prefix))
                )
            result = await within(
                vector["name"],
                producers[prefix].enqueue_detailed(vector["queue"], vector["task"], vector["args"], **options(vector)),
            )
            assert not result.duplicate
            assert result.stream == vector["stream"]
            stored = {t.sequence: t for t in await stored_tasks(nats_server.url, vector["stream"])}
            message = stored[result.sequence]
            check_message(vector, message.subject, message.headers, message.payload)
            assert message.headers["Nats-Msg-Id"] == result.id
    finally:
        for producer in producers.values():
            await producer.close()


async def test_trace_vectors_hold_when_the_context_comes_from_opentelemetry(producer: AsyncProducer, nats_server: NatsServer) -> None:
    """The traceparent/tracestate of the caller's OpenTelemetry context are sent exactly as if
    they had been given explicitly."""
    traced = [v for v in VECTORS["valid"] if "traceparent" in v["options"]]
    assert traced, "the vectors cover trace context"
    for vector in traced:
        carrier = {k: vector["options"][k] for k in ("traceparent", "tracestate") if k in vector["options"]}
        token = otel_context.attach(TraceContextTextMapPropagator().extract(carrier))
        try:
            result = await within(
                vector["name"],
                producer.enqueue_detailed(vector["queue"], vector["task"], vector["args"], **options(vector, with_trace=False)),
            )
        finally:
            otel_context.detach(token)
        stored = {t.sequence: t for t in await stored_tasks(nats_server.url)}
        message = stored[result.sequence]
        check_message(vector, message.subject, message.headers, message.payload)


async def test_invalid_vectors_publish_nothing(producer: AsyncProducer, nats_server: NatsServer) -> None:
    for vector in VECTORS["invalid"]:
        error: Optional[Exception] = None
        try:
            await producer.enqueue(vector["queue"], vector["task"], vector["args"], **options(vector))
        except (InvalidName, InvalidKey) as err:
            error = err
        assert error is not None and type(error).__name__ == vector["error"], vector["name"]
    assert await stored_tasks(nats_server.url) == []


# docs/conformance/priorities.json: priorities within a queue (docs/PROTOCOL.md §12), shared
# with tests/tests/priority_conformance.rs and clients/node/test/conformance.test.js.
with open(VECTORS_PATH.with_name("priorities.json"), encoding="utf-8") as _handle:
    PRIORITIES: Dict[str, Any] = json.load(_handle)


def test_priority_levels_and_header_vector() -> None:
    assert PRIORITIES["header"] == PRIORITY
    assert PRIORITIES["levels"] == [level.value for level in jetq.Priority]


def _priority_headers(headers: Dict[str, str]) -> List[str]:
    return [value for name, value in headers.items() if name == PRIORITY]


@pytest.mark.parametrize("vector", PRIORITIES["messages"], ids=ids(PRIORITIES["messages"]))
@pytest.mark.parametrize("as_enum", [False, True], ids=["str", "enum"])
def test_priority_message_vector(vector: Dict[str, Any], as_enum: bool) -> None:
    """``build_task_message`` (what every producer and outbox writer sends or stores) puts the
    task on exactly the vector's subject with exactly its ``Jetq-Priority`` header (or none)."""
    level: Any = vector["priority"]
    if as_enum and level is not None:
        level = jetq.Priority(level)
    due = parse_timestamp(vector["due"]) if "due" in vector else None
    message = build_task_message(
        Subjects(vector["prefix"]),
        vector["queue"],
        vector["task"],
        {},
        at=due,
        priority=level,
        max_delay=dt.timedelta(days=36500),
    )
    assert message.subject == vector["subject"], vector["name"]
    expected = [] if vector["header"] is None else [vector["header"]]
    assert _priority_headers(message.headers) == expected, vector["name"]
    assert message.priority == jetq.Priority(vector["priority"] or "normal")


@pytest.mark.parametrize("vector", PRIORITIES["tokens"], ids=lambda v: v["token"])
def test_priority_token_vector(vector: Dict[str, Any]) -> None:
    level = jetq.Priority(vector["level"])
    assert queue_token(vector["queue"], level) == vector["token"]
    assert split_queue_token(vector["token"]) == (vector["queue"], level)


@pytest.mark.parametrize("vector", PRIORITIES["subjects"], ids=lambda v: v["subject"])
def test_priority_subject_vector(vector: Dict[str, Any]) -> None:
    subjects = Subjects(vector["prefix"])
    parsed = vector["parsed"]
    got = subjects.parse_task_level(vector["subject"])
    if parsed is None:
        assert got is None
    else:
        level = jetq.Priority(parsed["level"])
        assert got == (parsed["queue"], level, parsed["task"])
        assert subjects.task_at(parsed["queue"], level, parsed["task"]) == vector["subject"]


@pytest.mark.parametrize("vector", PRIORITIES["invalid"], ids=ids(PRIORITIES["invalid"]))
def test_invalid_priority_vector_is_refused_with_the_reason(vector: Dict[str, Any]) -> None:
    with pytest.raises(jetq.InvalidPriority) as caught:
        build_task_message(Subjects(), "emails", "send", {}, priority=vector["priority"])
    assert caught.value.reason == vector["reason"]
    assert str(caught.value) == vector["reason"]
    assert caught.value.value == vector["priority"]
    assert isinstance(caught.value, jetq.InvalidOption)


async def test_priority_vectors_are_stored_on_their_subjects(nats_server: NatsServer) -> None:
    """Through a real server: each immediate vector's task is stored on the vector's subject
    with its header; a refused priority publishes nothing."""
    immediate = [v for v in PRIORITIES["messages"] if "due" not in v]
    producers: Dict[str, AsyncProducer] = {}
    try:
        for vector in immediate:
            prefix = vector["prefix"]
            if prefix not in producers:
                await within("task stream", create_task_stream(nats_server.url, prefix))
                producers[prefix] = await within(
                    "connect", AsyncProducer.connect(config_for(nats_server, prefix=prefix))
                )
            result = await within(
                vector["name"],
                producers[prefix].enqueue_detailed(vector["queue"], vector["task"], {}, priority=vector["priority"]),
            )
            stored = {t.sequence: t for t in await stored_tasks(nats_server.url, Subjects(prefix).tasks_stream)}
            message = stored[result.sequence]
            assert message.subject == vector["subject"], vector["name"]
            expected = [] if vector["header"] is None else [vector["header"]]
            assert _priority_headers(message.headers) == expected, vector["name"]
        before = len(await stored_tasks(nats_server.url))
        for bad in PRIORITIES["invalid"]:
            with pytest.raises(jetq.InvalidPriority):
                await producers["jetq"].enqueue("emails", "send", {}, priority=bad["priority"])
        assert len(await stored_tasks(nats_server.url)) == before
    finally:
        for producer in producers.values():
            await producer.close()


# --- Batches and workflows (docs/PROTOCOL.md §13): docs/conformance/workflows.json -----------

WORKFLOWS_PATH = VECTORS_PATH.parent / "workflows.json"
with open(WORKFLOWS_PATH, encoding="utf-8") as _handle:
    WORKFLOWS: Dict[str, Any] = json.load(_handle)


def test_workflow_buckets_headers_keys_and_ids() -> None:
    from jetq import workflows as wf

    for case in WORKFLOWS["buckets"]:
        assert wf.workflow_bucket(Subjects(case["prefix"])) == case["bucket"]
    assert WORKFLOWS["headers"] == {"batch": wf.BATCH_HEADER, "chain": wf.CHAIN_HEADER}
    for case in WORKFLOWS["keys"]:
        if "chain" in case:
            assert wf.chain_key(case["chain"]) == case["key"]
        elif "member" in case:
            assert wf.marker_key(case["batch"], case["member"]) == case["key"]
        else:
            assert wf.record_key(case["batch"]) == case["key"]
    for case in WORKFLOWS["member_ids"]:
        assert wf.member_id(case["task_id"]) == case["member"]
    ids = WORKFLOWS["ids"]
    for which in ("on_success", "on_complete"):
        assert wf.callback_id(ids[which]["batch"], which) == ids[which]["id"]
    assert wf.child_member_id(ids["child_member"]["batch"]) == ids["child_member"]["id"]
    for link in ids["links"]:
        assert wf.link_id(link["chain"], link["index"]) == link["id"]
        assert wf.link_header(link["chain"], link["index"]) == link["header"]
    for good in WORKFLOWS["valid_ids"]:
        wf.validate_id("batch", good)
    for bad in WORKFLOWS["invalid_ids"]:
        with pytest.raises(wf.InvalidWorkflow):
            wf.validate_id("batch", bad)


@pytest.mark.parametrize("case", WORKFLOWS["records"], ids=lambda c: c["name"])
def test_workflow_records_as_read(case: Dict[str, Any]) -> None:
    from jetq import workflows as wf

    record = json.loads(case["json"])
    assert record["state"] == case["state"]
    assert int(record["total"]) == case["total"]
    assert bool(record.get("chord")) == case["chord"]
    assert wf._may_be_complete(record) == case["may_be_complete"]


def test_workflow_markers_and_bodies() -> None:
    from jetq import workflows as wf

    for case in WORKFLOWS["markers"]:
        marker = json.loads(case["json"])
        assert marker["outcome"] == case["outcome"]
        assert marker.get("result") == case["result"]
    for case in WORKFLOWS["callback_bodies"]:
        assert wf.callback_body(case["args"], case["summary"]).decode() == case["body"]
    for case in WORKFLOWS["chain_bodies"]:
        assert wf.chain_body(case["links"], case["index"], case["result"]).decode() == case["body"]
    # The summary a producer-side firing builds is the one the vectors show.
    chord = WORKFLOWS["callback_bodies"][1]["summary"]
    markers = [(r["id"], {k: v for k, v in r.items() if k != "id"}) for r in chord["results"]]
    built = wf._summary({"id": chord["id"], "total": chord["total"], "chord": True}, markers)
    assert built == chord


def test_workflow_large_results_and_trace_links() -> None:
    from jetq import workflow_results as wr
    from jetq import workflows as wf

    for case in WORKFLOWS["markers"]:
        marker = json.loads(case["json"])
        assert marker.get("result_ref") == case.get("result_ref")
        assert marker.get("traceparent") == case.get("traceparent")
    results = WORKFLOWS["results"]
    for case in results["buckets"]:
        assert wr.results_bucket(Subjects(case["prefix"])) == case["bucket"]
    for case in results["objects"]:
        assert wr.result_object_name(case["batch"], case["member"]) == case["name"]
    assert (wr.MAX_MARKER_RESULT, wr.MAX_LINKS, wr.LINKS_HEADER) == (
        results["max_marker_result"],
        results["max_links"],
        results["links_header"],
    )
    for case in results["summaries"]:
        markers = [(id, marker) for id, marker in case["markers"]]
        assert wf._summary(case["record"], markers) == case["summary"]
        assert wr.links_header(markers) == case["links"]
    many = results["many_links"]
    markers = [(f"m{i:04}", {"outcome": "succeeded", "traceparent": many["traceparent"]}) for i in range(many["members"])]
    assert len((wr.links_header(markers) or "").split(",")) == many["links"]


async def test_workflow_records_headers_and_ids_on_a_real_server(nats_server: NatsServer) -> None:
    """What the Python producer stores for a batch and a chain (no worker runs them): the
    record, the members' ``Jetq-Batch``, the link's id and ``Jetq-Chain``; bad input refused
    before anything is stored."""
    from jetq import workflows as wf

    await within("task stream", create_task_stream(nats_server.url))
    producer = await within("connect", AsyncProducer.connect(config_for(nats_server)))
    try:
        handle = await within(
            "batch",
            wf.Batch(producer, id="export-42", chord=True, skip_callback_check=True)
            .add("exports", "chunk", {"i": 0}, key="export-42-0")
            .add("exports", "chunk", {"i": 1}, key="export-42-1")
            .on_success("exports", "assemble", {"export": 42})
            .enqueue(),
        )
        assert [m.id for m in handle.members] == ["export-42-0", "export-42-1"]
        stored = {t.sequence: t for t in await stored_tasks(nats_server.url)}
        for member in handle.members:
            headers = stored[member.sequence].headers
            assert headers["Jetq-Batch"] == "export-42"
            assert headers["Jetq-Track-Status"] == "1"  # a chord's members are tracked
            assert headers["Nats-Msg-Id"] == member.id
        status = await wf.batch_status(producer, "export-42")
        assert status is not None
        assert (status.state, status.total, status.pending, status.succeeded, status.dead) == ("closed", 2, 2, 0, 0)
        assert status.chord and not status.completed and not status.succeeded_all
        kv = await producer.client.jetstream().key_value("JETQ_BATCHES")
        record = json.loads((await kv.get("b.export-42")).value or b"{}")
        assert record["on_success"] == {"queue": "exports", "task": "assemble", "args": {"export": 42}}
        with pytest.raises(wf.BatchExists):
            await wf.Batch(producer, id="export-42").add("exports", "chunk", {}).enqueue()
        with pytest.raises(wf.InvalidWorkflow):
            await wf.Batch(producer, id="a.b").add("exports", "chunk", {}).enqueue()
        with pytest.raises(wf.InvalidWorkflow):
            wf.Batch(producer).on_success("exports", "assemble", [1])  # type: ignore[arg-type]
        # Nested: the child is one member of its open parent.
        await wf.Batch(producer, id="nightly", keep_open=True).enqueue()
        await wf.Batch(producer, id="child", parent="nightly").add("exports", "chunk", {}).enqueue()
        parent = await wf.batch_status(producer, "nightly")
        assert parent is not None and (parent.state, parent.total) == ("open", 1)
        await wf.batch_add(producer, "nightly", [wf.Member("exports", "chunk", {"late": True})])
        await wf.batch_close(producer, "nightly")
        parent = await wf.batch_status(producer, "nightly")
        assert parent is not None and (parent.state, parent.total) == ("closed", 2)
        with pytest.raises(wf.WorkflowStoreError):
            await wf.batch_add(producer, "nightly", [wf.Member("exports", "chunk", {})])
        # A chain: record and link 0.
        before = len(await stored_tasks(nats_server.url))
        for bad in (wf.Chain(), wf.Chain().then_with_previous("a", "b", {}), wf.Chain("x:y").then("a", "b", {})):
            with pytest.raises(wf.InvalidWorkflow):
                await wf.enqueue_chain(producer, bad)
        assert len(await stored_tasks(nats_server.url)) == before
        chain = wf.Chain("mail-after-export").then("exports", "export", {"id": 42}).then_with_previous(
            "emails", "mail", {"to": "ada@example.com"}
        )
        await wf.enqueue_chain(producer, chain)
        link = (await stored_tasks(nats_server.url))[-1]
        assert link.subject == "jetq.task.exports.export"
        assert link.headers["Nats-Msg-Id"] == "chain:mail-after-export:0"
        assert link.headers["Jetq-Chain"] == "mail-after-export:0"
        assert link.headers["Jetq-Track-Status"] == "1"  # the next link takes its result
        assert link.payload == b'{"id":42}'
        with pytest.raises(wf.ChainExists):
            await wf.enqueue_chain(producer, wf.Chain("mail-after-export").then("exports", "export", {}))
        state = await wf.chain_status(producer, "mail-after-export")
        assert state is not None and (state.state, state.at, state.failed_at) == ("running", 0, None)
        assert state.links[1] == {"queue": "emails", "task": "mail", "args": {"to": "ada@example.com"}, "with_previous": True}
    finally:
        await producer.close()
