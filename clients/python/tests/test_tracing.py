"""W3C trace context from the current OpenTelemetry span, in the asyncio and the blocking
producer (where the span lives in the caller's thread, not the producer's loop thread)."""

from __future__ import annotations

import threading
from typing import Iterator, List

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer, format_span_id, format_trace_id

from jetq import AsyncProducer, Producer
from jetq.testing import NatsServer, stored_tasks, stored_tasks_sync
from jetq.tracing import current_trace_context

from .support import config_for, within


@pytest.fixture
def tracer() -> Iterator[Tracer]:
    """A recording tracer of a local provider (the global one is left alone)."""
    provider = TracerProvider()
    yield provider.get_tracer("jetq-tests")
    provider.shutdown()


def expected_traceparent(span: object) -> str:
    context = span.get_span_context()  # type: ignore[attr-defined]
    return f"00-{format_trace_id(context.trace_id)}-{format_span_id(context.span_id)}-{context.trace_flags:02x}"


def test_no_active_span_means_no_trace_context() -> None:
    assert current_trace_context() == (None, None)


async def test_the_current_span_is_the_parent_of_the_task(producer: AsyncProducer, nats_server: NatsServer, tracer: Tracer) -> None:
    with tracer.start_as_current_span("signup") as span:
        await within("enqueue", producer.enqueue("emails", "send_email", {"to": "a@example.com"}))
        expected = expected_traceparent(span)
    await within("untraced", producer.enqueue("emails", "send_email", {"to": "b@example.com"}))
    traced, untraced = await stored_tasks(nats_server.url)
    assert traced.headers["traceparent"] == expected
    assert "traceparent" not in untraced.headers


async def test_an_explicit_traceparent_wins(producer: AsyncProducer, nats_server: NatsServer, tracer: Tracer) -> None:
    explicit = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with tracer.start_as_current_span("outer"):
        await within("enqueue", producer.enqueue("q", "t", {}, traceparent=explicit))
    [stored] = await stored_tasks(nats_server.url)
    assert stored.headers["traceparent"] == explicit


def test_the_blocking_producer_sends_the_callers_span(nats_server: NatsServer, task_stream: str, tracer: Tracer) -> None:
    with Producer(config_for(nats_server)) as producer:
        expected: List[str] = []

        def request(n: int) -> None:
            with tracer.start_as_current_span(f"request-{n}") as span:
                producer.enqueue("emails", "send_email", {"n": n})
                producer.enqueue_many([("emails", "send_email", {"n": n, "batch": True})])
                expected.append(expected_traceparent(span))

        threads = [threading.Thread(target=request, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
            assert not thread.is_alive()
    stored = stored_tasks_sync(nats_server.url)
    assert len(stored) == 8
    assert sorted({t.headers["traceparent"] for t in stored}) == sorted(expected)
