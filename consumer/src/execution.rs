//! Running one delivered task: decode, run the handler under its timeout with heartbeats, and
//! turn the outcome into exactly one of ack, NAK with delay, or dead letter then Term.

use std::{
    collections::HashMap,
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use async_nats::jetstream::{self, AckKind};
use futures::FutureExt;
use jetq_contract::{
    headers, otel::attributes as attr, AttemptOutcome, DeadReason, HttpFailure, Subjects,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    context::TaskContext,
    dead_letter::{attempt_failure, DeadLetter, DeadLetters},
    error::FailureKind,
    handler::{CallError, Registration, ANY_TASK},
    settings::WorkerSettings,
    status::{self, Start, StatusRecorder, Tracker},
    telemetry::{self, ProcessSpan, WorkerMetrics},
};

/// Handlers by `(queue, task)`; task [`ANY_TASK`] holds a queue's catch-all raw handler.
pub(crate) type Registry = HashMap<(String, String), Registration>;

/// The handler of a task: its own registration, else its queue's catch-all.
fn lookup<'a>(registry: &'a Registry, queue: &str, task: &str) -> Option<&'a Registration> {
    registry
        .get(&(queue.to_owned(), task.to_owned()))
        .or_else(|| registry.get(&(queue.to_owned(), ANY_TASK.to_owned())))
}

/// Longest delay between hand-backs of a task whose type no worker knows.
const UNKNOWN_TASK_MAX_DELAY: Duration = Duration::from_secs(30);

/// How one attempt ended.
enum Outcome {
    Succeeded,
    /// Retry unless this was the last attempt.
    Failed {
        outcome: AttemptOutcome,
        error: String,
        retry_after: Option<Duration>,
        http: Option<HttpFailure>,
    },
    /// Dead-letter now.
    Dead {
        reason: DeadReason,
        error: String,
        http: Option<HttpFailure>,
    },
    /// Shutdown grace ran out: give the task back for another worker.
    HandedBack,
}

impl Outcome {
    /// The `error.type` of an attempt whose handler failed; `None` for other outcomes.
    fn handler_error_type(&self) -> Option<&'static str> {
        match self {
            Outcome::Failed { outcome, .. } => Some(attempt_error_type(*outcome)),
            Outcome::Dead { reason, .. } => Some(reason.as_str()),
            Outcome::Succeeded | Outcome::HandedBack => None,
        }
    }
}

fn attempt_error_type(outcome: AttemptOutcome) -> &'static str {
    match outcome {
        AttemptOutcome::Error => "error",
        AttemptOutcome::Timeout => "timeout",
        AttemptOutcome::Panic => "panic",
        AttemptOutcome::Lost => "lost",
    }
}

/// Shared by every task a worker runs.
pub(crate) struct Executor {
    pub(crate) registry: Registry,
    pub(crate) dead_letters: DeadLetters,
    pub(crate) settings: WorkerSettings,
    pub(crate) subjects: Subjects,
    /// Cancelled when shutdown starts (handlers can see it).
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when the grace period is over: running tasks are handed back.
    pub(crate) hand_back: CancellationToken,
    /// Counters, durations and the in-flight gauge.
    pub(crate) metrics: WorkerMetrics,
    /// Status records of tracked tasks.
    pub(crate) status: StatusRecorder,
}

/// What the message says about itself, parsed once.
struct Delivery {
    id: String,
    queue: String,
    task: String,
    attempt: u32,
    sequence: u64,
    enqueued_at: SystemTime,
    /// The status of a tracked task, once it started.
    status: Option<Arc<Tracker>>,
}

impl Executor {
    /// Processes one delivery to its end. Never panics on bad input: every path ends in an
    /// ack, a NAK or a dead letter.
    pub(crate) async fn process(self: Arc<Self>, message: jetstream::Message) {
        let delivery = match self.parse(&message) {
            Ok(delivery) => delivery,
            Err(problem) => {
                tracing::error!(subject = %message.subject, %problem, "unusable delivery; terminating it");
                if let Err(err) = message.ack_with(AckKind::Term).await {
                    tracing::warn!(error = %err, "could not terminate an unusable delivery");
                }
                return;
            }
        };
        let durable = self.subjects.durable(&delivery.queue);
        let span = ProcessSpan {
            subject: message.subject.as_str(),
            durable: &durable,
            id: &delivery.id,
            queue: &delivery.queue,
            task: &delivery.task,
            attempt: delivery.attempt,
            headers: message.headers.as_ref(),
        }
        .open();
        self.process_delivery(message, delivery)
            .instrument(span)
            .await
    }

    fn parse(&self, message: &jetstream::Message) -> Result<Delivery, String> {
        let info = message
            .info()
            .map_err(|err| format!("no JetStream metadata: {err}"))?;
        let (queue, task) = self
            .subjects
            .parse_task(message.subject.as_str())
            .ok_or_else(|| "not a jetq task subject".to_owned())?;
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        let published = u64::try_from(info.published.unix_timestamp_nanos())
            .map(|nanos| UNIX_EPOCH + Duration::from_nanos(nanos))
            .unwrap_or_else(|_| SystemTime::now());
        let enqueued_at = header(headers::ENQUEUED_AT)
            .and_then(|text| jetq_contract::time::parse(&text))
            .unwrap_or(published);
        Ok(Delivery {
            id: header(headers::MSG_ID).unwrap_or_else(|| format!("seq-{}", info.stream_sequence)),
            queue: queue.to_owned(),
            task: task.to_owned(),
            attempt: u32::try_from(info.delivered).unwrap_or(u32::MAX).max(1),
            sequence: info.stream_sequence,
            enqueued_at,
            status: None,
        })
    }

    async fn process_delivery(&self, message: jetstream::Message, mut delivery: Delivery) {
        let Some(registration) = lookup(&self.registry, &delivery.queue, &delivery.task) else {
            return self.unknown_task(message, delivery).await;
        };
        let max_deliver = u32::try_from(self.settings.max_deliver).unwrap_or(u32::MAX);
        let (max_attempts, timeout) = match self.overrides(&message, registration) {
            Ok(limits) => limits,
            Err(problem) => {
                let outcome = Outcome::Dead {
                    reason: DeadReason::Undecodable,
                    error: problem,
                    http: None,
                };
                return self.finish(message, &delivery, 1, outcome).await;
            }
        };
        // One delivery is always kept back to dead-letter a task whose final attempt crashed.
        let max_attempts = max_attempts.min(max_deliver.saturating_sub(1)).max(1);
        if delivery.attempt > max_attempts {
            let outcome = Outcome::Dead {
                reason: DeadReason::Exhausted,
                error: format!(
                    "attempt {} of {max_attempts} ended without a result: its worker stopped \
                     (crash, kill or lost connection) before reporting",
                    delivery.attempt - 1
                ),
                http: None,
            };
            return self.finish(message, &delivery, max_attempts, outcome).await;
        }
        let tracked = self.tracks(&message, &delivery);
        if tracked {
            match self.status.start(delivery.started(max_attempts)).await {
                Start::Skip(state) => {
                    status::settle_skipped(&message, state).await;
                    return self.dead_letters.forget(delivery.sequence).await;
                }
                Start::Run(tracker) => delivery.status = Some(tracker),
                Start::Unavailable => {}
            }
        }
        let context = TaskContext {
            id: delivery.id.clone(),
            queue: delivery.queue.clone(),
            task: delivery.task.clone(),
            attempt: delivery.attempt,
            max_attempts,
            sequence: delivery.sequence,
            enqueued_at: delivery.enqueued_at,
            timeout,
            headers: message.headers.clone().unwrap_or_default(),
            shutdown: self.shutdown.clone(),
            status: status::ContextStatus::of(delivery.status.clone(), tracked),
        };
        tracing::debug!("task started");
        let started = Instant::now();
        let outcome = {
            let _running = self.metrics.running(&delivery.queue, &delivery.task);
            self.run(&message, registration, context, timeout).await
        };
        if let Some(tracker) = delivery.status.as_ref().filter(|t| t.is_cancelled()) {
            if !matches!(outcome, Outcome::HandedBack) {
                let (queue, task) = (&delivery.queue, &delivery.task);
                self.metrics
                    .duration(queue, task, "cancelled", started.elapsed());
                return status::settle_cancelled(&message, tracker).await;
            }
        }
        let label = match &outcome {
            Outcome::Succeeded => "succeeded",
            Outcome::HandedBack => "handed_back",
            Outcome::Failed { .. } | Outcome::Dead { .. } => "failed",
        };
        self.metrics
            .duration(&delivery.queue, &delivery.task, label, started.elapsed());
        if let Some(error_type) = outcome.handler_error_type() {
            self.metrics
                .failed(&delivery.queue, &delivery.task, error_type);
        }
        self.finish(message, &delivery, max_attempts, outcome).await
    }

    /// Per-task overrides from headers; a malformed override is a producer bug, reported as
    /// undecodable rather than silently ignored.
    fn overrides(
        &self,
        message: &jetstream::Message,
        registration: &Registration,
    ) -> Result<(u32, Duration), String> {
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str())
        };
        let max_attempts = match header(headers::MAX_ATTEMPTS) {
            None => registration.options.max_attempts,
            Some(text) => text
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    format!(
                        "header {} is not a positive integer: {text:?}",
                        headers::MAX_ATTEMPTS
                    )
                })?,
        };
        let timeout = match header(headers::TIMEOUT_MS) {
            None => registration.options.timeout,
            Some(text) => text
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n >= 1)
                .map(Duration::from_millis)
                .ok_or_else(|| {
                    format!(
                        "header {} is not a positive integer: {text:?}",
                        headers::TIMEOUT_MS
                    )
                })?,
        };
        Ok((max_attempts, timeout))
    }

    /// Runs the handler under its timeout, catching panics, sending progress heartbeats so a
    /// long task is not redelivered while it is alive, and giving up at hand-back time.
    async fn run(
        &self,
        message: &jetstream::Message,
        registration: &Registration,
        context: TaskContext,
        timeout: Duration,
    ) -> Outcome {
        let call =
            AssertUnwindSafe(registration.handler.call(&message.payload, context)).catch_unwind();
        let timed = tokio::time::timeout(timeout, call);
        tokio::pin!(timed);
        let interval = self.settings.heartbeat_interval();
        let mut heartbeat =
            tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let result = loop {
            tokio::select! {
                result = &mut timed => break result,
                _ = heartbeat.tick() => {
                    if let Err(err) = message.ack_with(AckKind::Progress).await {
                        tracing::warn!(error = %err, "could not send a progress heartbeat");
                    }
                }
                _ = self.hand_back.cancelled() => return Outcome::HandedBack,
            }
        };
        match result {
            Err(_elapsed) => Outcome::Failed {
                outcome: AttemptOutcome::Timeout,
                error: format!("attempt timed out after {timeout:?}"),
                retry_after: None,
                http: None,
            },
            Ok(Err(panic)) => Outcome::Failed {
                outcome: AttemptOutcome::Panic,
                error: format!("handler panicked: {}", panic_message(panic.as_ref())),
                retry_after: None,
                http: None,
            },
            Ok(Ok(Ok(()))) => Outcome::Succeeded,
            Ok(Ok(Err(CallError::Undecodable(err)))) => Outcome::Dead {
                reason: DeadReason::Undecodable,
                error: format!(
                    "payload does not decode as task {}: {err}",
                    registration.task
                ),
                http: None,
            },
            Ok(Ok(Err(CallError::Failed(err)))) => match err.kind() {
                FailureKind::Fatal => Outcome::Dead {
                    reason: DeadReason::Fatal,
                    error: err.message().to_owned(),
                    http: err.http().cloned(),
                },
                FailureKind::Retry { after } => Outcome::Failed {
                    outcome: AttemptOutcome::Error,
                    error: err.message().to_owned(),
                    retry_after: after,
                    http: err.http().cloned(),
                },
            },
        }
    }

    /// Turns an outcome into the one message action that ends this delivery.
    async fn finish(
        &self,
        message: jetstream::Message,
        delivery: &Delivery,
        max_attempts: u32,
        outcome: Outcome,
    ) {
        // Runs inside the attempt's `process` span.
        let span = tracing::Span::current();
        match outcome {
            Outcome::Succeeded => {
                span.set_attribute(attr::OUTCOME, "succeeded");
                self.metrics.succeeded(&delivery.queue, &delivery.task);
                if let Some(tracker) = &delivery.status {
                    tracker.succeeded().await;
                }
                if let Err(err) = message.ack().await {
                    tracing::warn!(error = %err, "could not ack a finished task; it will run again");
                }
                if delivery.attempt > 1 {
                    self.dead_letters.forget(delivery.sequence).await;
                }
                tracing::debug!("task succeeded");
            }
            Outcome::Failed {
                outcome,
                error,
                retry_after,
                http,
            } => {
                telemetry::record_failure(&span, attempt_error_type(outcome), &error);
                if delivery.attempt >= max_attempts {
                    span.set_attribute(attr::OUTCOME, "dead_lettered");
                    self.dead_letters
                        .record_failure(
                            delivery.sequence,
                            attempt_failure(delivery.attempt, outcome, &error),
                        )
                        .await;
                    let history_error = format!("final attempt {}: {error}", delivery.attempt);
                    self.dead_letter(
                        message,
                        delivery,
                        DeadReason::Exhausted,
                        history_error,
                        http,
                    )
                    .await;
                    return;
                }
                let delay = retry_after.unwrap_or_else(|| {
                    lookup(&self.registry, &delivery.queue, &delivery.task)
                        .map(|r| r.options.retry.delay(delivery.attempt))
                        .unwrap_or(Duration::from_secs(1))
                });
                tracing::warn!(%error, retry_in = ?delay, "attempt failed; will retry");
                span.set_attribute(attr::OUTCOME, "retried");
                self.metrics.retried(&delivery.queue, &delivery.task);
                self.dead_letters
                    .record_failure(
                        delivery.sequence,
                        attempt_failure(delivery.attempt, outcome, &error),
                    )
                    .await;
                if let Some(tracker) = &delivery.status {
                    tracker.retrying(&error, delay).await;
                }
                if let Err(err) = message.ack_with(AckKind::Nak(Some(delay))).await {
                    tracing::warn!(error = %err, "could not NAK a failed task; it returns after ack_wait");
                }
            }
            Outcome::Dead {
                reason,
                error,
                http,
            } => {
                telemetry::record_failure(&span, reason.as_str(), &error);
                span.set_attribute(attr::OUTCOME, "dead_lettered");
                self.dead_letter(message, delivery, reason, error, http)
                    .await;
            }
            Outcome::HandedBack => {
                span.set_attribute(attr::OUTCOME, "handed_back");
                tracing::info!("shutdown grace over; handing the task back");
                if let Some(tracker) = &delivery.status {
                    tracker.handed_back().await;
                }
                if let Err(err) = message.ack_with(AckKind::Nak(None)).await {
                    tracing::warn!(error = %err, "could not hand a task back; it returns after ack_wait");
                }
            }
        }
    }

    /// Writes the dead letter, then terminates the task. If the write fails, the task is handed
    /// back with a delay so the dead-letter write is tried again: it is never dropped.
    async fn dead_letter(
        &self,
        message: jetstream::Message,
        delivery: &Delivery,
        reason: DeadReason,
        error: String,
        http: Option<HttpFailure>,
    ) {
        let letter = DeadLetter {
            queue: &delivery.queue,
            task: &delivery.task,
            sequence: delivery.sequence,
            headers: message.headers.as_ref(),
            payload: message.payload.clone(),
            reason,
            attempts: delivery.attempt,
            error: error.clone(),
            http,
        };
        match self.dead_letters.write(letter).await {
            Ok(()) => {
                let dead = delivery.dead(reason, &error);
                let tracked = self.tracks(&message, delivery);
                let tracker = delivery.status.as_ref();
                self.status.dead_lettered(tracker, tracked, dead).await;
                if let Err(err) = message.ack_with(AckKind::Term).await {
                    tracing::warn!(error = %err, "dead letter written but the task was not terminated; it will be dead-lettered again (deduplicated)");
                }
                self.dead_letters.forget(delivery.sequence).await;
            }
            Err(err) => {
                tracing::error!(error = %err, "could not write the dead letter; retrying later");
                if let Err(err) = message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                    .await
                {
                    tracing::warn!(error = %err, "could not NAK the task either; it returns after ack_wait");
                }
            }
        }
    }

    /// A task type no handler is registered for: during a rolling deploy a newer producer may
    /// be ahead of the workers, so hand it back with a delay until the grace period (or the
    /// deliveries) run out, then dead-letter it.
    async fn unknown_task(&self, message: jetstream::Message, delivery: Delivery) {
        let age = SystemTime::now()
            .duration_since(delivery.enqueued_at)
            .unwrap_or_default();
        let grace = self.settings.unknown_task_grace;
        let last_delivery = i64::from(delivery.attempt) >= self.settings.max_deliver - 1;
        if age >= grace || last_delivery {
            let error = format!(
                "no worker has a handler for task {} on queue {} (waited {:?}, {} deliveries)",
                delivery.task, delivery.queue, age, delivery.attempt
            );
            let span = tracing::Span::current();
            telemetry::record_failure(&span, DeadReason::UnknownTask.as_str(), &error);
            span.set_attribute(attr::OUTCOME, "dead_lettered");
            return self
                .dead_letter(message, &delivery, DeadReason::UnknownTask, error, None)
                .await;
        }
        // Spread the remaining deliveries over the remaining grace period.
        let deliveries_left =
            (self.settings.max_deliver - 1 - i64::from(delivery.attempt)).max(1) as u32;
        let delay = ((grace - age) / deliveries_left)
            .clamp(Duration::from_millis(200), UNKNOWN_TASK_MAX_DELAY);
        tracing::warn!(retry_in = ?delay, "no handler for this task type here; handing it back");
        tracing::Span::current().set_attribute(attr::OUTCOME, "handed_back");
        if let Err(err) = message.ack_with(AckKind::Nak(Some(delay))).await {
            tracing::warn!(error = %err, "could not hand back an unknown task");
        }
    }
}

impl Executor {
    /// True if the task keeps a status record: its type opts in or its message asks.
    fn tracks(&self, message: &jetstream::Message, delivery: &Delivery) -> bool {
        delivery.status.is_some()
            || status::has_track_header(message.headers.as_ref())
            || lookup(&self.registry, &delivery.queue, &delivery.task)
                .is_some_and(|registration| registration.options.track_status)
    }
}

impl Delivery {
    fn started(&self, max_attempts: u32) -> status::Started<'_> {
        status::Started {
            id: &self.id,
            queue: &self.queue,
            task: &self.task,
            sequence: self.sequence,
            attempt: self.attempt,
            max_attempts,
            enqueued_at: self.enqueued_at,
        }
    }

    fn dead<'a>(&'a self, reason: DeadReason, error: &'a str) -> status::Dead<'a> {
        status::Dead {
            id: &self.id,
            queue: &self.queue,
            task: &self.task,
            sequence: self.sequence,
            attempts: self.attempt,
            reason,
            error,
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(non-string panic payload)".to_owned()
    }
}
