//! The worker's traces, metrics and health.
//!
//! - Each attempt runs in a `process <subject>` span (kind CONSUMER) whose parent is the
//!   producer's `send` span, taken from the task's `traceparent`/`tracestate` headers.
//! - A dead-letter write is a `send <dead subject>` span linked to the task's original trace.
//! - Counters, the duration histogram and the in-flight gauge are recorded per queue and task;
//!   the queue gauges (pending, ack pending, max ack pending) are polled from consumer info.
//! - [`WorkerHealth`] says whether the worker is ready: running, connected, consumers bound.

use std::{
    collections::BTreeSet,
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use async_nats::{
    connection::State,
    jetstream::{consumer::PullConsumer, context::ConsumerInfoErrorKind},
    HeaderMap,
};
use jetq_contract::{
    otel::{self, attributes as attr, metrics as names},
    Priority, Subjects,
};
use opentelemetry::{
    metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter},
    trace::{Status, TraceContextExt},
    KeyValue,
};
use tokio_util::sync::CancellationToken;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::history::{History, Outcome};

/// Bucket boundaries (seconds) of the task duration histogram: from 5 ms to an hour.
const DURATION_BUCKETS: [f64; 18] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];

/// The OpenTelemetry messaging metric of processing time (semantic conventions, messaging
/// metrics): a histogram in seconds, recorded beside `jetq.task.duration` for every attempt.
pub(crate) const MESSAGING_PROCESS_DURATION: &str = "messaging.process.duration";
/// The OpenTelemetry messaging metric of messages delivered to the application: a counter,
/// incremented once per delivery handed to a handler.
pub(crate) const MESSAGING_CONSUMED_MESSAGES: &str = "messaging.client.consumed.messages";
/// The bucket boundaries the messaging conventions specify for `messaging.process.duration`
/// (`jetq.task.duration` keeps jetq's own, up to an hour).
const MESSAGING_DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// `messaging.operation.name` of both messaging metrics: a worker processes tasks.
const PROCESS: &str = "process";

/// The worker's default meter: the global provider's `jetq-consumer` meter.
pub(crate) fn meter() -> Meter {
    jetq_contract::bootstrap::meter("jetq-consumer", env!("CARGO_PKG_VERSION"))
}

/// The worker's instruments.
#[derive(Clone)]
pub(crate) struct WorkerMetrics {
    succeeded: Counter<u64>,
    failed: Counter<u64>,
    retried: Counter<u64>,
    dead_lettered: Counter<u64>,
    dead_letter_failures: Counter<u64>,
    handed_back: Counter<u64>,
    stalled: Counter<u64>,
    duration: Histogram<f64>,
    process_duration: Histogram<f64>,
    consumed: Counter<u64>,
    in_flight: UpDownCounter<i64>,
    pending: Gauge<u64>,
    ack_pending: Gauge<u64>,
    max_ack_pending: Gauge<i64>,
    /// The per-minute history in `<PREFIX>_METRICS`, when on (`crate::history`).
    history: Option<Arc<History>>,
}

impl WorkerMetrics {
    pub(crate) fn new(meter: &Meter) -> Self {
        WorkerMetrics {
            succeeded: meter
                .u64_counter(names::SUCCEEDED)
                .with_description("Attempts whose handler succeeded (the task was acked)")
                .build(),
            failed: meter
                .u64_counter(names::FAILED)
                .with_description("Attempts whose handler failed, by error.type")
                .build(),
            retried: meter
                .u64_counter(names::RETRIED)
                .with_description("Failed attempts handed back for another attempt")
                .build(),
            dead_lettered: meter
                .u64_counter(names::DEAD_LETTERED)
                .with_description("Tasks written to the dead-letter stream, by jetq.dead.reason")
                .build(),
            dead_letter_failures: meter
                .u64_counter(names::DEAD_LETTER_FAILURES)
                .with_description("Dead-letter writes that failed, by error.type; the task stays in the task stream and is retried")
                .build(),
            handed_back: meter
                .u64_counter(names::HANDED_BACK)
                .with_description("Deliveries handed back without an outcome (shutdown, unknown type); not attempts")
                .build(),
            stalled: meter
                .u64_counter(names::STALLED)
                .with_description("Handler polls that blocked their thread past the stall threshold")
                .build(),
            duration: meter
                .f64_histogram(names::DURATION)
                .with_description("How long each attempt's handler ran, by jetq.outcome")
                .with_unit("s")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            process_duration: meter
                .f64_histogram(MESSAGING_PROCESS_DURATION)
                .with_description("Duration of processing operation (OpenTelemetry messaging conventions; error.type set when the attempt did not succeed)")
                .with_unit("s")
                .with_boundaries(MESSAGING_DURATION_BUCKETS.to_vec())
                .build(),
            consumed: meter
                .u64_counter(MESSAGING_CONSUMED_MESSAGES)
                .with_description("Number of messages that were delivered to the application (OpenTelemetry messaging conventions)")
                .with_unit("{message}")
                .build(),
            in_flight: meter
                .i64_up_down_counter(names::IN_FLIGHT)
                .with_description("Attempts running now in this process")
                .build(),
            pending: meter
                .u64_gauge(names::QUEUE_PENDING)
                .with_description("Tasks of the queue not yet delivered (num_pending)")
                .build(),
            ack_pending: meter
                .u64_gauge(names::QUEUE_ACK_PENDING)
                .with_description("Tasks delivered and not yet acked, all workers (num_ack_pending)")
                .build(),
            max_ack_pending: meter
                .i64_gauge(names::QUEUE_MAX_ACK_PENDING)
                .with_description("The queue's max_ack_pending: delivery stalls at this many ack-pending tasks (-1: none)")
                .build(),
            history: None,
        }
    }

    /// Also counts outcomes, run times and queue depth for the metrics history.
    pub(crate) fn with_history(mut self, history: Option<Arc<History>>) -> Self {
        self.history = history;
        self
    }

    /// The metrics history, when on.
    pub(crate) fn history(&self) -> Option<Arc<History>> {
        self.history.clone()
    }

    fn count(&self, labels: &TaskLabels, outcome: Outcome) {
        if let Some(history) = &self.history {
            history.outcome(&labels.queue(), outcome);
        }
    }

    pub(crate) fn succeeded(&self, labels: &TaskLabels) {
        self.succeeded.add(1, &labels.0);
        self.count(labels, Outcome::Succeeded);
    }

    pub(crate) fn failed(&self, labels: &TaskLabels, error_type: &'static str) {
        self.failed
            .add(1, &labels.with(attr::ERROR_TYPE, error_type));
        self.count(labels, Outcome::Failed);
    }

    pub(crate) fn retried(&self, labels: &TaskLabels) {
        self.retried.add(1, &labels.0);
        self.count(labels, Outcome::Retried);
    }

    pub(crate) fn dead_lettered(&self, labels: &TaskLabels, reason: &'static str) {
        self.dead_lettered
            .add(1, &labels.with(attr::DEAD_REASON, reason));
        self.count(labels, Outcome::Dead);
    }

    pub(crate) fn dead_letter_failed(&self, labels: &TaskLabels, error_type: &'static str) {
        self.dead_letter_failures
            .add(1, &labels.with(attr::ERROR_TYPE, error_type));
    }

    pub(crate) fn handed_back(&self, labels: &TaskLabels) {
        self.handed_back.add(1, &labels.0);
    }

    pub(crate) fn stalled(&self, labels: &TaskLabels) {
        self.stalled.add(1, &labels.0);
    }

    pub(crate) fn duration(&self, labels: &TaskLabels, outcome: &'static str, took: Duration) {
        if let Some(history) = &self.history {
            if outcome != "handed_back" {
                history.run(&labels.queue(), took);
            }
        }
        self.duration
            .record(took.as_secs_f64(), &labels.with(attr::OUTCOME, outcome));
        let messaging = labels.messaging();
        if outcome == "succeeded" {
            self.process_duration.record(took.as_secs_f64(), &messaging);
        } else {
            // `failed`, `cancelled`, `handed_back`: the attempt did not complete its work.
            let [system, operation, destination] = messaging;
            self.process_duration.record(
                took.as_secs_f64(),
                &[
                    system,
                    operation,
                    destination,
                    KeyValue::new(attr::ERROR_TYPE, outcome),
                ],
            );
        }
    }

    /// Counts an attempt as running until the returned guard is dropped (and the delivery as
    /// consumed by the application, `messaging.client.consumed.messages`).
    pub(crate) fn running(&self, labels: &TaskLabels) -> InFlight {
        self.consumed.add(1, &labels.messaging());
        self.in_flight.add(1, &labels.0);
        InFlight {
            counter: self.in_flight.clone(),
            labels: labels.clone(),
        }
    }

    fn queue_info(
        &self,
        queue: &str,
        level: Priority,
        info: &async_nats::jetstream::consumer::Info,
    ) {
        // One series per priority level: a queue's backlog is their sum.
        let labels = [
            KeyValue::new(attr::QUEUE, queue.to_owned()),
            KeyValue::new(attr::PRIORITY, level.as_str()),
        ];
        self.pending.record(info.num_pending, &labels);
        self.ack_pending.record(
            u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX),
            &labels,
        );
        self.max_ack_pending
            .record(info.config.max_ack_pending, &labels);
        if let Some(history) = &self.history {
            history.depth(
                queue,
                level,
                info.num_pending,
                u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX),
            );
        }
    }
}

/// Decrements the in-flight gauge when dropped.
pub(crate) struct InFlight {
    counter: UpDownCounter<i64>,
    labels: TaskLabels,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counter.add(-1, &self.labels.0);
    }
}

/// The `jetq.queue` and `jetq.task.name` labels of one task type. Their values are shared
/// strings, so cloning the labels (several metric calls per attempt) allocates nothing; the
/// registry builds them once per registered task type.
#[derive(Clone)]
pub(crate) struct TaskLabels([KeyValue; 2]);

impl TaskLabels {
    pub(crate) fn new(queue: Arc<str>, task: Arc<str>) -> Self {
        TaskLabels([
            KeyValue::new(attr::QUEUE, queue),
            KeyValue::new(attr::TASK_NAME, task),
        ])
    }

    /// For paths that are not per task (dead letters, the sweeper): built from plain names.
    pub(crate) fn of(queue: &str, task: &str) -> Self {
        TaskLabels::new(Arc::from(queue), Arc::from(task))
    }

    /// The queue label's value.
    fn queue(&self) -> std::borrow::Cow<'_, str> {
        self.0[0].value.as_str()
    }

    fn with(&self, key: &'static str, value: &'static str) -> [KeyValue; 3] {
        let [queue, task] = self.0.clone();
        [queue, task, KeyValue::new(key, value)]
    }

    /// The attributes of the OpenTelemetry messaging metrics: `messaging.system` (`nats`),
    /// `messaging.operation.name` (`process`) and `messaging.destination.name` (the queue: the
    /// destination the worker consumes from, low cardinality).
    fn messaging(&self) -> [KeyValue; 3] {
        [
            KeyValue::new(attr::MESSAGING_SYSTEM, attr::MESSAGING_SYSTEM_NATS),
            KeyValue::new(attr::MESSAGING_OPERATION_NAME, PROCESS),
            KeyValue::new(attr::MESSAGING_DESTINATION_NAME, self.0[0].value.clone()),
        ]
    }
}

/// What a `process` span is made of.
pub(crate) struct ProcessSpan<'a> {
    pub(crate) subject: &'a str,
    /// For the consumer group name (the queue's durable).
    pub(crate) subjects: &'a Subjects,
    pub(crate) id: &'a str,
    pub(crate) queue: &'a str,
    pub(crate) task: &'a str,
    pub(crate) attempt: u32,
    pub(crate) headers: Option<&'a HeaderMap>,
}

impl ProcessSpan<'_> {
    /// Opens the span of one attempt, a child of the producer's span. Its fields (task id,
    /// queue, task, attempt, trace id) are on every log line emitted inside it.
    pub(crate) fn open(self) -> tracing::Span {
        let span = tracing::info_span!(
            "process",
            otel.name = %format_args!("process {}", self.subject),
            otel.kind = "consumer",
            messaging.message.id = %self.id,
            jetq.queue = %self.queue,
            jetq.task.name = %self.task,
            // i64: tracing-opentelemetry records u64 fields as strings.
            jetq.attempt = i64::from(self.attempt),
            trace_id = tracing::field::Empty,
        );
        // Nothing records a disabled span (no subscriber, or a filter drops it): skip reading
        // the trace context and building attribute values, which every attempt would pay.
        if span.is_disabled() {
            return span;
        }
        let parent = otel::extract(self.headers);
        // Fails only without an OpenTelemetry layer; the trace id is still logged below.
        let _ = span.set_parent(parent.clone());
        span.set_attribute(attr::MESSAGING_SYSTEM, attr::MESSAGING_SYSTEM_NATS);
        span.set_attribute(attr::MESSAGING_OPERATION_TYPE, "process");
        span.set_attribute(attr::MESSAGING_OPERATION_NAME, "process");
        span.set_attribute(attr::MESSAGING_DESTINATION_NAME, self.subject.to_owned());
        span.set_attribute(
            attr::MESSAGING_CONSUMER_GROUP_NAME,
            self.subjects.durable(self.queue),
        );
        if let Some(trace_id) = otel::log_trace_id(&span.context(), &parent) {
            span.record("trace_id", tracing::field::display(trace_id));
        }
        // A batch's callback: links to its members' attempts (at most 128, PROTOCOL §13).
        if let Some(links) = self
            .headers
            .and_then(|headers| headers.get(jetq_contract::workflow::results::LINKS))
        {
            for link in jetq_contract::workflow::results::parse_links(links.as_str()) {
                if let Some(member) = otel::parse(link, None) {
                    span.add_link(member);
                }
            }
        }
        span
    }
}

/// Marks a span as failed: `error.type`, status error and an `exception` event.
pub(crate) fn record_failure(span: &tracing::Span, error_type: &'static str, message: &str) {
    span.set_attribute(attr::ERROR_TYPE, error_type);
    span.add_event(
        "exception",
        vec![
            KeyValue::new("exception.type", error_type),
            KeyValue::new("exception.message", message.to_owned()),
        ],
    );
    span.set_status(Status::error(message.to_owned()));
}

/// Opens the span of a dead-letter write: `send <dead subject>`, kind PRODUCER, linked to the
/// task's original trace. Inside a `process` span it is that span's child; elsewhere (the
/// sweeper) the original producer span becomes its parent, so it shows in the same trace.
pub(crate) fn dead_letter_span(
    subject: &str,
    id: &str,
    queue: &str,
    task: &str,
    reason: &'static str,
    original: Option<&HeaderMap>,
) -> tracing::Span {
    let original = otel::extract(original);
    let span = tracing::info_span!(
        "dead_letter",
        otel.name = %format_args!("send {subject}"),
        otel.kind = "producer",
        messaging.message.id = %id,
        jetq.queue = %queue,
        jetq.task.name = %task,
        jetq.dead.reason = reason,
    );
    if tracing::Span::current().is_none() {
        let _ = span.set_parent(original.clone());
    }
    span.set_attribute(attr::MESSAGING_SYSTEM, attr::MESSAGING_SYSTEM_NATS);
    span.set_attribute(attr::MESSAGING_OPERATION_TYPE, "send");
    span.set_attribute(attr::MESSAGING_OPERATION_NAME, "dead_letter");
    span.set_attribute(attr::MESSAGING_DESTINATION_NAME, subject.to_owned());
    span.add_link(original.span().span_context().clone());
    span
}

/// Why a worker is not ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// The worker has not started running, or is shutting down.
    #[error("the worker is not running (not started yet, or shutting down)")]
    NotRunning,
    /// The NATS connection is down; the client keeps reconnecting.
    #[error("not connected to NATS (connection {0})")]
    Disconnected(String),
    /// A queue's durable consumer is gone from the server.
    #[error("durable consumer(s) missing on the server: {0}")]
    ConsumersMissing(String),
}

/// Whether a worker is ready to run tasks: it is running, its NATS connection is up and every
/// queue's durable consumer exists. Cheap to clone and to check; get it from
/// [`crate::Worker::health`] before calling `run`, and serve it on `/readyz`.
#[derive(Clone)]
pub struct WorkerHealth {
    client: async_nats::Client,
    state: Arc<HealthState>,
}

#[derive(Default)]
struct HealthState {
    running: AtomicBool,
    missing: Mutex<BTreeSet<String>>,
}

impl fmt::Debug for WorkerHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerHealth")
            .field("ready", &self.check())
            .finish()
    }
}

impl WorkerHealth {
    pub(crate) fn new(client: async_nats::Client) -> Self {
        WorkerHealth {
            client,
            state: Arc::new(HealthState::default()),
        }
    }

    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), NotReady> {
        if !self.state.running.load(Ordering::SeqCst) {
            return Err(NotReady::NotRunning);
        }
        match self.client.connection_state() {
            State::Connected => {}
            other => return Err(NotReady::Disconnected(other.to_string())),
        }
        let missing = self
            .state
            .missing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(String::as_str).collect();
            return Err(NotReady::ConsumersMissing(names.join(", ")));
        }
        Ok(())
    }

    /// True when [`WorkerHealth::check`] is `Ok`.
    pub fn is_ready(&self) -> bool {
        self.check().is_ok()
    }

    pub(crate) fn set_running(&self, running: bool) {
        self.state.running.store(running, Ordering::SeqCst);
    }

    fn set_missing(&self, durable: &str, missing: bool) {
        let mut set = self
            .state
            .missing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if missing {
            set.insert(durable.to_owned());
        } else {
            set.remove(durable);
        }
    }
}

/// Polls each queue's consumer info every `interval` until `stop`: records the queue gauges and
/// whether each durable still exists. A failed request (e.g. while disconnected) changes
/// nothing; only "not found" marks a consumer missing.
pub(crate) async fn watch_queues(
    consumers: Vec<(String, Priority, PullConsumer)>,
    metrics: WorkerMetrics,
    health: WorkerHealth,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.cancelled() => return,
        }
        for (queue, level, consumer) in &consumers {
            let durable = consumer.cached_info().name.clone();
            match consumer.get_info().await {
                Ok(info) => {
                    metrics.queue_info(queue, *level, &info);
                    health.set_missing(&durable, false);
                }
                Err(err) => {
                    let gone = matches!(
                        err.kind(),
                        ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound
                    );
                    if gone {
                        health.set_missing(&durable, true);
                    }
                    tracing::debug!(%queue, error = %err, "could not read consumer info");
                }
            }
        }
    }
}
