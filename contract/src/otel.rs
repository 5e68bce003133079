//! OpenTelemetry conventions every jetq component shares: W3C trace-context propagation in
//! message headers, and the names of span attributes and metrics (see `docs/OBSERVABILITY.md`).
//!
//! Propagation always uses the W3C TraceContext format explicitly, never the global
//! propagator: OpenTelemetry's global default is a no-op, and the wire format must not depend on
//! how an application set up its telemetry. Nothing is injected when there is no valid span
//! context (no OpenTelemetry layer installed, or a disabled span).

use async_nats::HeaderMap;
use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{SpanContext, TraceContextExt},
    Context,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;

use crate::headers;

/// Writes propagation fields into a NATS header map.
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` carries nothing; header values may not hold line breaks.
        if value.is_empty() || value.contains(['\r', '\n']) {
            return;
        }
        if key == headers::TRACEPARENT || key == headers::TRACESTATE {
            self.0.insert(key, value.as_str());
        }
    }
}

/// Reads propagation fields from a NATS header map.
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        // The W3C keys by their prebuilt names: a `&str` key costs async-nats a validation and
        // an allocation per lookup, and every delivery is looked up twice.
        let value = match key {
            headers::TRACEPARENT => self.0.get(headers::names::TRACEPARENT),
            headers::TRACESTATE => self.0.get(headers::names::TRACESTATE),
            key => self.0.get(key),
        };
        value.map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Writes the span context of `cx` into `headers` as W3C `traceparent` (and `tracestate` when
/// non-empty). Returns false, writing nothing, when `cx` holds no valid span context.
pub fn inject(cx: &Context, headers: &mut HeaderMap) -> bool {
    if !cx.span().span_context().is_valid() {
        return false;
    }
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
    true
}

/// The remote parent carried by `headers` (`traceparent`/`tracestate`), or an empty context
/// when the headers are absent or do not hold a valid W3C trace context.
pub fn extract(headers: Option<&HeaderMap>) -> Context {
    match headers {
        Some(headers) => TraceContextPropagator::new().extract(&HeaderExtractor(headers)),
        None => Context::new(),
    }
}

/// The trace id a span's log lines carry: the span's own context (`own`) when OpenTelemetry
/// tracing is on, else its `parent`'s (the caller's, from the message or request headers), so
/// logs can be matched to the caller's trace even when this process exports no traces; `None`
/// if neither is valid.
pub fn log_trace_id(own: &Context, parent: &Context) -> Option<opentelemetry::trace::TraceId> {
    [own.span().span_context(), parent.span().span_context()]
        .into_iter()
        .find(|span_context| span_context.is_valid())
        .map(|span_context| span_context.trace_id())
}

/// Parses a W3C `traceparent` (and optional `tracestate`) given as strings, e.g. by a caller of
/// the producer. `None` when `traceparent` is not valid.
pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    let mut map = HeaderMap::new();
    if traceparent.contains(['\r', '\n']) {
        return None;
    }
    map.insert(headers::TRACEPARENT, traceparent);
    if let Some(state) = tracestate.filter(|s| !s.contains(['\r', '\n'])) {
        map.insert(headers::TRACESTATE, state);
    }
    let cx = extract(Some(&map));
    let span_context = cx.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// Attribute keys: OpenTelemetry messaging semantic conventions plus jetq's own.
pub mod attributes {
    /// `messaging.system`; always [`MESSAGING_SYSTEM_NATS`].
    pub const MESSAGING_SYSTEM: &str = "messaging.system";
    /// The value of `messaging.system`.
    pub const MESSAGING_SYSTEM_NATS: &str = "nats";
    /// `messaging.operation.type`: `send` or `process`.
    pub const MESSAGING_OPERATION_TYPE: &str = "messaging.operation.type";
    /// `messaging.operation.name`: the operation as jetq names it (`send`, `process`).
    pub const MESSAGING_OPERATION_NAME: &str = "messaging.operation.name";
    /// `messaging.destination.name`: the subject published to.
    pub const MESSAGING_DESTINATION_NAME: &str = "messaging.destination.name";
    /// `messaging.consumer.group.name`: the queue's durable consumer.
    pub const MESSAGING_CONSUMER_GROUP_NAME: &str = "messaging.consumer.group.name";
    /// `messaging.message.id`: the task id (`Nats-Msg-Id`).
    pub const MESSAGING_MESSAGE_ID: &str = "messaging.message.id";
    /// `messaging.message.body.size`: payload bytes.
    pub const MESSAGING_MESSAGE_BODY_SIZE: &str = "messaging.message.body.size";
    /// `error.type`: the class of a failure (`timeout`, `panic`, `error`, `fatal`, …).
    pub const ERROR_TYPE: &str = "error.type";
    /// The queue name.
    pub const QUEUE: &str = "jetq.queue";
    /// A queue's priority level (`high`, `normal`, `low`) on its backlog gauges.
    pub const PRIORITY: &str = "jetq.priority";
    /// The task's wire name.
    pub const TASK_NAME: &str = "jetq.task.name";
    /// The attempt number, from 1.
    pub const ATTEMPT: &str = "jetq.attempt";
    /// How an attempt ended: `succeeded`, `retried`, `dead_lettered`, `handed_back`.
    pub const OUTCOME: &str = "jetq.outcome";
    /// Why a task was dead-lettered (`exhausted`, `fatal`, …).
    pub const DEAD_REASON: &str = "jetq.dead.reason";
}

/// Metric names (OpenTelemetry style; Prometheus shows `.` as `_`, counters with `_total`).
pub mod metrics {
    /// Counter: tasks accepted by the task stream (duplicates not counted).
    pub const ENQUEUED: &str = "jetq.tasks.enqueued";
    /// Counter: enqueues that failed (`error.type` says why).
    pub const ENQUEUE_FAILURES: &str = "jetq.tasks.enqueue_failures";
    /// Counter: attempts whose handler succeeded (the task was acked).
    pub const SUCCEEDED: &str = "jetq.tasks.succeeded";
    /// Counter: attempts whose handler failed (error, timeout, panic, fatal, undecodable).
    pub const FAILED: &str = "jetq.tasks.failed";
    /// Counter: failed attempts handed back for another attempt.
    pub const RETRIED: &str = "jetq.tasks.retried";
    /// Counter: tasks written to the dead-letter stream.
    pub const DEAD_LETTERED: &str = "jetq.tasks.dead_lettered";
    /// Counter: dead-letter writes that failed, by `error.type` (`publish`, `payload_store`,
    /// `too_large`). The task stays in the task stream and the write is retried; a rising count
    /// means tasks that cannot end anywhere a user sees them.
    pub const DEAD_LETTER_FAILURES: &str = "jetq.tasks.dead_letter_failures";
    /// Counter: deliveries handed back without an outcome (shutdown, unknown type); they do
    /// not count as attempts.
    pub const HANDED_BACK: &str = "jetq.tasks.handed_back";
    /// Counter: handler polls that held their thread longer than the stall threshold (a
    /// blocking or CPU-bound handler that should use `spawn_blocking`).
    pub const STALLED: &str = "jetq.tasks.stalled";
    /// Histogram (seconds): how long each attempt's handler ran.
    pub const DURATION: &str = "jetq.task.duration";
    /// Up-down counter: attempts running now in this process.
    pub const IN_FLIGHT: &str = "jetq.tasks.in_flight";
    /// Gauge: tasks of a queue not yet delivered (`num_pending` of its durable).
    pub const QUEUE_PENDING: &str = "jetq.queue.pending";
    /// Gauge: tasks of a queue delivered and not yet acked, across all workers.
    pub const QUEUE_ACK_PENDING: &str = "jetq.queue.ack_pending";
    /// Gauge: the durable's `max_ack_pending`; delivery stalls when `ack_pending` reaches it.
    pub const QUEUE_MAX_ACK_PENDING: &str = "jetq.queue.max_ack_pending";
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

    #[test]
    fn round_trips_through_headers() {
        let span_context = SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("b7ad6b7169203331").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(span_context.clone());
        let mut map = HeaderMap::new();
        assert!(inject(&cx, &mut map));
        assert_eq!(
            map.get(headers::TRACEPARENT).map(|v| v.as_str()),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert!(
            map.get(headers::TRACESTATE).is_none(),
            "empty tracestate omitted"
        );
        let back = extract(Some(&map));
        assert_eq!(
            back.span().span_context().trace_id(),
            span_context.trace_id()
        );
        assert!(back.span().span_context().is_remote());
    }

    #[test]
    fn nothing_injected_without_a_span() {
        let mut map = HeaderMap::new();
        assert!(!inject(&Context::new(), &mut map));
        assert!(map.get(headers::TRACEPARENT).is_none());
        assert!(!extract(None).span().span_context().is_valid());
    }

    #[test]
    fn parses_caller_values() {
        assert!(parse(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            Some("vendor=x")
        )
        .is_some());
        assert!(parse("garbage", None).is_none());
        assert!(parse(
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            None
        )
        .is_none());
        assert!(parse(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n",
            None
        )
        .is_none());
    }
}
