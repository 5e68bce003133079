"""W3C trace context from the current OpenTelemetry context, when ``opentelemetry-api`` is
installed (it is optional: ``pip install jetq-client[otel]``).

Only ``traceparent`` and ``tracestate`` are written — the two headers docs/PROTOCOL.md defines —
with the W3C propagator itself, whatever global propagator the application configured (a
``baggage`` or B3 header would not be understood by the workers).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

__all__ = ["OTEL_AVAILABLE", "current_trace_context"]

try:  # pragma: no cover - exercised by whichever environment runs the tests
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _PROPAGATOR: Optional[TraceContextTextMapPropagator] = TraceContextTextMapPropagator()
except ImportError:  # pragma: no cover
    _PROPAGATOR = None

#: True when ``opentelemetry-api`` could be imported.
OTEL_AVAILABLE = _PROPAGATOR is not None


def current_trace_context() -> Tuple[Optional[str], Optional[str]]:
    """``(traceparent, tracestate)`` of the span active in the calling context, or
    ``(None, None)`` when there is none (or OpenTelemetry is not installed)."""
    if _PROPAGATOR is None:
        return None, None
    carrier: Dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    traceparent = carrier.get("traceparent")
    if not traceparent:
        return None, None
    return traceparent, carrier.get("tracestate") or None
