"""Run by tests/tests/conformance.rs (Rust): enqueues `job` tasks on queue `work` with the
Python client, for a Rust worker to run, and prints a JSON report on its last line.

- n=42 through the blocking Producer, inside an OpenTelemetry span, with an idempotency key
  and a max-attempts override;
- n=43 through the blocking Producer outside any span;
- n=44 and n=45 through AsyncProducer.enqueue_many.

Environment: JETQ_NATS_URL (the test server). Every wait is bounded by the producer's timeouts.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Dict


def main() -> int:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import format_span_id, format_trace_id

    import jetq

    def note(n: int) -> str:
        return f"from python: Gr\u00fc\u00dfe #{n}"

    tracer = TracerProvider().get_tracer("jetq-interop")
    ids: Dict[int, str] = {}
    with jetq.Producer.from_env(request_timeout=5.0) as producer:
        with tracer.start_as_current_span("signup") as span:
            context = span.get_span_context()
            traceparent = (
                f"00-{format_trace_id(context.trace_id)}-{format_span_id(context.span_id)}"
                f"-{context.trace_flags:02x}"
            )
            ids[42] = producer.enqueue("work", "job", {"n": 42, "note": note(42)}, key="py-signup-42", max_attempts=2)
        ids[43] = producer.enqueue("work", "job", {"n": 43, "note": note(43)})

    async def batch() -> None:
        async with await jetq.AsyncProducer.from_env() as producer:
            results = await producer.enqueue_many([("work", "job", {"n": n, "note": note(n)}) for n in (44, 45)])
            for n, result in zip((44, 45), jetq.results_or_raise(results)):
                ids[n] = result.id

    asyncio.run(batch())
    print(json.dumps({"ids": ids, "traceparent": traceparent, "traced": 42}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
