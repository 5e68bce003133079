//! The producer's traces and metrics: one `send <subject>` span (kind PRODUCER) per enqueued
//! task, whose W3C context travels in the task's headers, and the enqueue counters.

use std::{borrow::Cow, fmt};

use async_nats::HeaderMap;
use jetq_contract::otel::{self, attributes as attr, metrics as names};
use opentelemetry::{
    metrics::{Counter, Meter},
    trace::{Status, TraceContextExt},
    KeyValue,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::error::EnqueueError;

/// The instrumentation scope of the producer's spans and metrics.
pub(crate) fn meter() -> Meter {
    jetq_contract::bootstrap::meter("jetq-producer", env!("CARGO_PKG_VERSION"))
}

/// The producer's instruments.
#[derive(Clone)]
pub(crate) struct ProducerMetrics {
    enqueued: Counter<u64>,
    failures: Counter<u64>,
}

impl fmt::Debug for ProducerMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProducerMetrics")
    }
}

impl ProducerMetrics {
    pub(crate) fn new(meter: &Meter) -> Self {
        ProducerMetrics {
            enqueued: meter
                .u64_counter(names::ENQUEUED)
                .with_description("Tasks accepted by the task stream (duplicates not counted)")
                .build(),
            failures: meter
                .u64_counter(names::ENQUEUE_FAILURES)
                .with_description("Enqueues that failed, by error.type")
                .build(),
        }
    }

    pub(crate) fn enqueued(&self, queue: Cow<'static, str>, task: Cow<'static, str>) {
        self.enqueued.add(1, &labels(queue, task));
    }

    pub(crate) fn failed(
        &self,
        queue: Cow<'static, str>,
        task: Cow<'static, str>,
        error: &EnqueueError,
    ) {
        let mut labels = labels(queue, task).to_vec();
        labels.push(KeyValue::new(attr::ERROR_TYPE, error_type(error)));
        self.failures.add(1, &labels);
    }
}

/// The queue and task labels. A typed task's names are `&'static str` (cloning their `Cow` is
/// free), so its labels cost no allocation: this runs for every enqueue, whether or not a
/// meter provider is installed.
fn labels(queue: Cow<'static, str>, task: Cow<'static, str>) -> [KeyValue; 2] {
    [
        KeyValue::new(attr::QUEUE, queue),
        KeyValue::new(attr::TASK_NAME, task),
    ]
}

/// A short, low-cardinality name of an enqueue error for `error.type`.
pub(crate) fn error_type(error: &EnqueueError) -> &'static str {
    match error {
        EnqueueError::InvalidName(_) => "invalid_name",
        EnqueueError::InvalidKey(_) => "invalid_key",
        EnqueueError::Serialize { .. } => "serialize",
        EnqueueError::TooLarge { .. } => "too_large",
        EnqueueError::StreamFull { .. } => "stream_full",
        EnqueueError::NoStream { .. } => "no_stream",
        EnqueueError::NotConnected { .. } => "not_connected",
        EnqueueError::Timeout { .. } => "timeout",
        EnqueueError::Rejected { .. } => "rejected",
        EnqueueError::Flow(_) => "invalid_flow",
        EnqueueError::Unique { .. } => "unique_unavailable",
        EnqueueError::BatchExists { .. } => "batch_exists",
        EnqueueError::ChainExists { .. } => "chain_exists",
        EnqueueError::UnknownCallback { .. } => "unknown_callback",
        EnqueueError::MembersNotEnqueued { .. } => "members_not_enqueued",
        EnqueueError::InvalidWorkflow(_) => "invalid_workflow",
        EnqueueError::Workflow { .. } => "workflow_unavailable",
    }
}

/// Opens the `send <subject>` span of one task and writes its trace context into `headers`.
///
/// The span is a child of the caller's current span (e.g. the web request's). A valid
/// `traceparent` given by the caller wins: it is written verbatim and becomes the span's parent.
/// Without an OpenTelemetry layer the span has no context and nothing is injected.
pub(crate) fn send_span(
    subject: &str,
    queue: &str,
    task: &str,
    id: &str,
    body_size: usize,
    caller: Option<(&str, Option<&str>)>,
    headers: &mut HeaderMap,
) -> tracing::Span {
    let span = tracing::info_span!(
        "send",
        otel.name = %format_args!("send {subject}"),
        otel.kind = "producer",
        messaging.message.id = %id,
        jetq.queue = %queue,
        jetq.task.name = %task,
    );
    // Without a subscriber that records this span (no OpenTelemetry layer, or a filter that
    // drops it) there is nothing to set: skip building the attribute values and the context.
    let recorded = !span.is_disabled();
    if recorded {
        span.set_attribute(attr::MESSAGING_SYSTEM, attr::MESSAGING_SYSTEM_NATS);
        span.set_attribute(attr::MESSAGING_OPERATION_TYPE, "send");
        span.set_attribute(attr::MESSAGING_OPERATION_NAME, "send");
        span.set_attribute(attr::MESSAGING_DESTINATION_NAME, subject.to_owned());
        span.set_attribute(
            attr::MESSAGING_MESSAGE_BODY_SIZE,
            i64::try_from(body_size).unwrap_or(i64::MAX),
        );
    }
    let caller = caller.and_then(|(parent, state)| {
        let parsed = otel::parse(parent, state);
        if parsed.is_none() {
            tracing::debug!(traceparent = %parent, "ignoring an invalid caller traceparent");
        }
        parsed.map(|span_context| (span_context, parent, state))
    });
    match caller {
        Some((span_context, parent, state)) => {
            // Only fails when no OpenTelemetry layer is installed: the headers carry it anyway.
            let _ = span
                .set_parent(opentelemetry::Context::new().with_remote_span_context(span_context));
            headers.insert(jetq_contract::headers::TRACEPARENT, parent);
            if let Some(state) = state.filter(|s| !s.is_empty() && !s.contains(['\r', '\n'])) {
                headers.insert(jetq_contract::headers::TRACESTATE, state);
            }
        }
        None if recorded => {
            otel::inject(&span.context(), headers);
        }
        None => {}
    }
    span
}

/// Marks the span of a failed enqueue: status error and an `exception` event.
pub(crate) fn record_error(span: &tracing::Span, error: &EnqueueError) {
    let message = error.to_string();
    span.set_attribute(attr::ERROR_TYPE, error_type(error));
    span.add_event(
        "exception",
        vec![
            KeyValue::new("exception.type", error_type(error)),
            KeyValue::new("exception.message", message.clone()),
        ],
    );
    span.set_status(Status::error(message));
}
