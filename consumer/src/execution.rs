//! Running one delivered task: decode, run the handler under its timeout with heartbeats, and
//! turn the outcome into exactly one of ack, NAK with delay, or dead letter then Term.

use std::{
    panic::AssertUnwindSafe,
    sync::Arc,
    task::Poll,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use async_nats::{
    jetstream::{self, AckKind},
    HeaderMap,
};
use futures::FutureExt;
use jetq_contract::{
    headers, otel::attributes as attr, AttemptOutcome, DeadReason, HttpFailure, Subjects,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    context::TaskContext,
    dead_letter::{self, attempt_failure, DeadLetters, LetterToWrite},
    error::FailureKind,
    handler::{CallError, Registration, Registry},
    limits::{Admission, FlowControl, FlowTask, Permit},
    settings::WorkerSettings,
    stall::{StallWatch, TaskNames as StallNames},
    status::{self, Start, StatusRecorder, Tracker},
    telemetry::{self, ProcessSpan, TaskLabels, WorkerMetrics},
    workflow,
};
use jetq_contract::workflow::MemberOutcome;

mod overrides;
mod unknown_task;

use overrides::overrides;

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
    /// Reports handlers that block their thread.
    pub(crate) stall: Arc<StallWatch>,
    /// Rate and concurrency limits, unique keys (see `limits/`).
    pub(crate) flow: Arc<FlowControl>,
}

/// What the message says about itself, parsed once, and the handler it goes to.
///
/// The strings are shared with the task's context (and, for a registered type, with its
/// registration), so a delivery allocates only its id and its header map.
struct Delivery<'a> {
    id: Arc<str>,
    queue: Arc<str>,
    task: Arc<str>,
    /// This worker's handler of the task, if it has one.
    registration: Option<&'a Registration>,
    /// Metric labels of the task's queue and type.
    labels: TaskLabels,
    /// The message's headers, taken out of it once: the context shares them with the handler.
    headers: Arc<HeaderMap>,
    /// JetStream's delivery count (1-based): every delivery, hand-backs included.
    delivered: u64,
    /// The attempt number (delivered − hand-backs, see `jetq_contract::attempts`). Known once
    /// the attempt record was read; `delivered` until then.
    attempt: u32,
    sequence: u64,
    enqueued_at: SystemTime,
    /// The status of a tracked task, once it started.
    status: Option<Arc<Tracker>>,
    /// The concurrency slot of a limited task, once admitted.
    flow: Option<Permit>,
}

impl Executor {
    /// Processes one delivery to its end. Never panics on bad input: every path ends in an
    /// ack, a NAK or a dead letter.
    pub(crate) async fn process(self: Arc<Self>, mut message: jetstream::Message) {
        let delivery = match self.parse(&mut message) {
            Ok(delivery) => delivery,
            Err(problem) => {
                tracing::error!(subject = %message.subject, %problem, "unusable delivery; terminating it");
                if let Err(err) = message.ack_with(AckKind::Term).await {
                    tracing::warn!(error = %err, "could not terminate an unusable delivery");
                }
                return;
            }
        };
        let span = ProcessSpan {
            subject: message.subject.as_str(),
            subjects: &self.subjects,
            id: &delivery.id,
            queue: &delivery.queue,
            task: &delivery.task,
            attempt: delivery.attempt,
            headers: Some(&delivery.headers),
        }
        .open();
        self.process_delivery(message, delivery)
            .instrument(span)
            .await
    }

    /// The JetStream context of this worker's connection.
    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        self.dead_letters.jetstream()
    }

    /// Gives a delivery back without running it (the worker is stopping, the server sent more
    /// than asked for, or it waited too long for a slot): redelivered after `delay` (at once
    /// for `None`). Recorded as a hand-back first: it is no attempt.
    pub(crate) async fn hand_back_unrun(
        &self,
        message: jetstream::Message,
        delay: Option<Duration>,
    ) {
        if let Ok(info) = message.info() {
            let sequence = info.stream_sequence;
            if let Some((queue, task)) = self.subjects.parse_task(message.subject.as_str()) {
                self.metrics
                    .handed_back(&TaskLabels::new(Arc::from(queue), Arc::from(task)));
            }
            Box::pin(self.dead_letters.attempts().record_hand_back(sequence)).await;
        }
        if let Err(err) = message.ack_with(AckKind::Nak(delay)).await {
            tracing::warn!(error = %err, "could not hand a task back; it returns after ack_wait");
        }
    }

    /// Reads the delivery's facts and takes its headers out of the message.
    fn parse(&self, message: &mut jetstream::Message) -> Result<Delivery<'_>, String> {
        let info = message
            .info()
            .map_err(|err| format!("no JetStream metadata: {err}"))?;
        let (attempt, sequence) = (info.delivered, info.stream_sequence);
        let published = u64::try_from(info.published.unix_timestamp_nanos())
            .map(|nanos| UNIX_EPOCH + Duration::from_nanos(nanos))
            .unwrap_or_else(|_| SystemTime::now());
        let (queue, task) = self
            .subjects
            .parse_task(message.subject.as_str())
            .ok_or_else(|| "not a jetq task subject".to_owned())?;
        let registration = self.registry.lookup(queue, task);
        let (queue, task, labels) = match registration {
            Some(registration) if !registration.is_catch_all() => (
                registration.queue.clone(),
                registration.task.clone(),
                registration.labels.clone(),
            ),
            _ => {
                let (queue, task): (Arc<str>, Arc<str>) = (Arc::from(queue), Arc::from(task));
                let labels = TaskLabels::new(queue.clone(), task.clone());
                (queue, task, labels)
            }
        };
        let headers = message.message.headers.take().unwrap_or_default();
        let header = |name| headers.get(name).map(|value| value.as_str());
        let enqueued_at = header(headers::names::ENQUEUED_AT)
            .and_then(jetq_contract::time::parse)
            .unwrap_or(published);
        let id = match header(headers::names::MSG_ID) {
            Some(id) => Arc::from(id),
            None => Arc::from(format!("seq-{sequence}")),
        };
        Ok(Delivery {
            id,
            queue,
            task,
            registration,
            labels,
            headers: Arc::new(headers),
            delivered: u64::try_from(attempt).unwrap_or(1).max(1),
            attempt: u32::try_from(attempt).unwrap_or(u32::MAX).max(1),
            sequence,
            enqueued_at,
            status: None,
            flow: None,
        })
    }

    async fn process_delivery(&self, message: jetstream::Message, mut delivery: Delivery<'_>) {
        let Some(registration) = delivery.registration else {
            return Box::pin(self.unknown_task(message, delivery)).await;
        };
        // A first delivery has no record; a redelivery may have been handed back before, which
        // does not count as an attempt.
        if delivery.delivered > 1 {
            let record = Box::pin(self.dead_letters.attempts().record(delivery.sequence)).await;
            delivery.attempt = record.attempt(delivery.delivered);
            tracing::Span::current().set_attribute(attr::ATTEMPT, i64::from(delivery.attempt));
        }
        let max_deliver = u32::try_from(self.settings.max_deliver).unwrap_or(u32::MAX);
        let (max_attempts, timeout) = match overrides(&delivery.headers, registration) {
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
        // The server's last delivery is kept to dead-letter the task, never to run it: a run
        // that failed or was handed back now would leave the task stranded in the stream.
        // Reached with attempts left only when hand-backs used up `max_deliver`.
        if delivery.delivered >= self.settings.max_deliver.max(1) as u64 {
            let outcome = Outcome::Dead {
                reason: DeadReason::DeliveriesExhausted,
                error: format!(
                    "the task was delivered {} times (JETQ_MAX_DELIVER) with attempt {} of \
                     {max_attempts} still to run: it was handed back too often (shutdowns, \
                     unknown type)",
                    delivery.delivered, delivery.attempt
                ),
                http: None,
            };
            return self.finish(message, &delivery, max_attempts, outcome).await;
        }
        // Flow control: a task over a rate or concurrency limit waits, as a hand-back (no
        // attempt used); plain tasks skip this with one map and one header lookup.
        if self
            .flow
            .applies(&delivery.queue, &delivery.task, &delivery.headers)
        {
            match Box::pin(self.flow.admit(delivery.flow_task())).await {
                Admission::Run(permit) => delivery.flow = Some(permit),
                Admission::Wait(delay) => {
                    tracing::debug!(retry_in = ?delay, "over a flow limit; handing the task back");
                    return Box::pin(self.hand_back_unrun(message, Some(delay))).await;
                }
                Admission::Replaced => {
                    tracing::debug!("debounced: a later enqueue replaced this task; dropping it");
                    if let Err(err) = message.ack().await {
                        tracing::warn!(error = %err, "could not ack a replaced task");
                    }
                    return Box::pin(self.dead_letters.attempts().forget(delivery.sequence)).await;
                }
            }
        }
        let tracked = tracks(&delivery);
        if tracked {
            match Box::pin(self.status.start(delivery.started(max_attempts))).await {
                Start::Skip(state) => {
                    // Ended before (an ack or a termination was lost): its batch or chain
                    // may not know yet.
                    if workflow::applies(&delivery.headers) {
                        let outcome = if state == jetq_contract::TaskState::Succeeded {
                            MemberOutcome::Succeeded
                        } else {
                            MemberOutcome::Dead
                        };
                        let finished = self.dead_letters.workflows().finished(
                            &delivery.headers,
                            &delivery.id,
                            outcome,
                            None,
                        );
                        if let Err(err) = Box::pin(finished).await {
                            workflow::log_failure(&err);
                            if let Err(err) = message
                                .ack_with(AckKind::Nak(Some(workflow::RETRY_DELAY)))
                                .await
                            {
                                tracing::warn!(error = %err, "could not NAK the task");
                            }
                            return;
                        }
                    }
                    Box::pin(status::settle_skipped(&message, state)).await;
                    return Box::pin(self.dead_letters.attempts().forget(delivery.sequence)).await;
                }
                Start::Run(tracker) => delivery.status = Some(tracker),
                Start::Unavailable => {}
            }
        }
        // Cancelled with the task (tracked, or by worker control), and by `run` when the
        // attempt is over.
        let cancel = match &delivery.status {
            Some(tracker) => tracker.cancellation().clone(),
            None => CancellationToken::new(),
        };
        let attempt_over = cancel.child_token();
        let context = TaskContext {
            id: delivery.id.clone(),
            queue: delivery.queue.clone(),
            task: delivery.task.clone(),
            attempt: delivery.attempt,
            max_attempts,
            sequence: delivery.sequence,
            enqueued_at: delivery.enqueued_at,
            timeout,
            headers: delivery.headers.clone(),
            shutdown: self.shutdown.clone(),
            attempt_over: attempt_over.clone(),
            cancel: cancel.clone(),
            status: status::ContextStatus::of(delivery.status.clone(), tracked),
        };
        tracing::debug!("task started");
        let started = Instant::now();
        let outcome = {
            let _running = self.metrics.running(&delivery.labels);
            let names = StallNames {
                id: delivery.id.clone(),
                queue: delivery.queue.clone(),
                task: delivery.task.clone(),
                attempt: delivery.attempt,
                sequence: delivery.sequence,
                batch: workflow::batch_of(&delivery.headers),
                cancel: cancel.clone(),
                ack: message.reply.clone(),
            };
            let watched = self.stall.watch(
                names,
                delivery.labels.clone(),
                registration.handler.call(&message.payload, context),
            );
            self.run(&message, watched, registration, timeout, attempt_over)
                .await
        };
        let tracker = delivery.status.as_ref().filter(|t| t.is_cancelled());
        if (tracker.is_some() || (delivery.status.is_none() && cancel.is_cancelled()))
            && !matches!(outcome, Outcome::HandedBack)
        {
            self.metrics
                .duration(&delivery.labels, "cancelled", started.elapsed());
            Box::pin(
                self.flow
                    .settle(delivery.flow.as_ref(), true, delivery.flow_task()),
            )
            .await;
            if workflow::applies(&delivery.headers) {
                let finished = self.dead_letters.workflows().finished(
                    &delivery.headers,
                    &delivery.id,
                    MemberOutcome::Dead,
                    None,
                );
                if let Err(err) = Box::pin(finished).await {
                    workflow::log_failure(&err);
                }
            }
            match tracker {
                Some(tracker) => Box::pin(status::settle_cancelled(&message, tracker)).await,
                None => crate::control::settle_cancelled(&message).await,
            }
            return Box::pin(self.dead_letters.attempts().forget(delivery.sequence)).await;
        }
        let label = match &outcome {
            Outcome::Succeeded => "succeeded",
            Outcome::HandedBack => "handed_back",
            Outcome::Failed { .. } | Outcome::Dead { .. } => "failed",
        };
        self.metrics
            .duration(&delivery.labels, label, started.elapsed());
        if let Some(error_type) = outcome.handler_error_type() {
            self.metrics.failed(&delivery.labels, error_type);
        }
        self.finish(message, &delivery, max_attempts, outcome).await
    }

    /// Runs the handler under its timeout, catching panics, sending progress heartbeats so a
    /// long task is not redelivered while it is alive, and giving up at hand-back time.
    async fn run(
        &self,
        message: &jetstream::Message,
        handler: impl std::future::Future<Output = Result<(), CallError>>,
        registration: &Registration,
        timeout: Duration,
        attempt_over: CancellationToken,
    ) -> Outcome {
        // Whatever ends the attempt (timeout, hand-back, an outcome), work the handler moved to
        // a blocking thread learns it through the context's cancellation token.
        let _attempt_over = attempt_over.drop_guard();
        let call = AssertUnwindSafe(handler).catch_unwind();
        let timed = tokio::time::timeout(timeout, call);
        tokio::pin!(timed);
        // Most tasks of a busy queue end within their first poll: they need no heartbeat timer
        // (an allocation and a timer-wheel entry each).
        let result = match futures::poll!(timed.as_mut()) {
            Poll::Ready(result) => result,
            Poll::Pending => {
                let interval = self.settings.heartbeat_interval();
                let mut heartbeat =
                    tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
                loop {
                    tokio::select! {
                        result = &mut timed => break result,
                        _ = heartbeat.tick() => {
                            if let Err(err) = message.ack_with(AckKind::Progress).await {
                                tracing::warn!(error = %err, "could not send a progress heartbeat");
                            }
                        }
                        _ = self.hand_back.cancelled() => return Outcome::HandedBack,
                    }
                }
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
    ///
    /// Every await here but the ack is boxed, as are the status and unknown-task paths of
    /// `process_delivery`: they write dead letters, history and status records, whose futures
    /// are kilobytes, and an unboxed one makes every task's future that large (it is moved
    /// into the heap per delivery; the memcpy was a quarter of a worker's instructions).
    async fn finish(
        &self,
        message: jetstream::Message,
        delivery: &Delivery<'_>,
        max_attempts: u32,
        outcome: Outcome,
    ) {
        // Runs inside the attempt's `process` span.
        let span = tracing::Span::current();
        // Free the task's concurrency slot and, if this ends the task, its unique key.
        if delivery.flow.is_some() || self.flow.releases_at_end(&delivery.headers) {
            let ended = match &outcome {
                Outcome::Succeeded | Outcome::Dead { .. } => true,
                Outcome::Failed { .. } => delivery.attempt >= max_attempts,
                Outcome::HandedBack => false,
            };
            let task = delivery.flow_task();
            Box::pin(self.flow.settle(delivery.flow.as_ref(), ended, task)).await;
        }
        match outcome {
            Outcome::Succeeded => {
                span.set_attribute(attr::OUTCOME, "succeeded");
                self.metrics.succeeded(&delivery.labels);
                let result = delivery
                    .status
                    .as_ref()
                    .and_then(|tracker| tracker.pending().result.clone());
                if let Some(tracker) = &delivery.status {
                    Box::pin(tracker.succeeded()).await;
                }
                // A batch member or chain link: counted (callbacks, next link) before the ack.
                if workflow::applies(&delivery.headers) {
                    let finished = self.dead_letters.workflows().finished(
                        &delivery.headers,
                        &delivery.id,
                        MemberOutcome::Succeeded,
                        result.as_ref(),
                    );
                    if let Err(err) = Box::pin(finished).await {
                        workflow::log_failure(&err);
                        if let Err(err) = message
                            .ack_with(AckKind::Nak(Some(workflow::RETRY_DELAY)))
                            .await
                        {
                            tracing::warn!(error = %err, "could not NAK the task; it returns after ack_wait");
                        }
                        return;
                    }
                }
                if let Err(err) = message.ack().await {
                    tracing::warn!(error = %err, "could not ack a finished task; it will run again");
                }
                if delivery.delivered > 1 {
                    Box::pin(self.dead_letters.attempts().forget(delivery.sequence)).await;
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
                    Box::pin(self.dead_letters.attempts().record_failure(
                        delivery.sequence,
                        attempt_failure(delivery.attempt, outcome, &error),
                    ))
                    .await;
                    let history_error = format!("final attempt {}: {error}", delivery.attempt);
                    Box::pin(self.dead_letter(
                        message,
                        delivery,
                        DeadReason::Exhausted,
                        history_error,
                        http,
                    ))
                    .await;
                    return;
                }
                let delay = retry_after.unwrap_or_else(|| {
                    delivery
                        .registration
                        .map(|r| r.options.retry.delay(delivery.attempt))
                        .unwrap_or(Duration::from_secs(1))
                });
                tracing::warn!(%error, retry_in = ?delay, "attempt failed; will retry");
                span.set_attribute(attr::OUTCOME, "retried");
                self.metrics.retried(&delivery.labels);
                Box::pin(self.dead_letters.attempts().record_failure(
                    delivery.sequence,
                    attempt_failure(delivery.attempt, outcome, &error),
                ))
                .await;
                if let Some(tracker) = &delivery.status {
                    Box::pin(tracker.retrying(&error, delay)).await;
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
                Box::pin(self.dead_letter(message, delivery, reason, error, http)).await;
            }
            Outcome::HandedBack => {
                span.set_attribute(attr::OUTCOME, "handed_back");
                tracing::info!("shutdown grace over; handing the task back");
                if let Some(tracker) = &delivery.status {
                    Box::pin(tracker.handed_back()).await;
                }
                // Before the NAK: the next delivery must see that this one was no attempt.
                self.metrics.handed_back(&delivery.labels);
                Box::pin(
                    self.dead_letters
                        .attempts()
                        .record_hand_back(delivery.sequence),
                )
                .await;
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
        delivery: &Delivery<'_>,
        reason: DeadReason,
        error: String,
        http: Option<HttpFailure>,
    ) {
        let letter = LetterToWrite {
            queue: &delivery.queue,
            task: &delivery.task,
            sequence: delivery.sequence,
            headers: Some(&delivery.headers),
            payload: message.payload.clone(),
            reason,
            attempts: delivery.attempt,
            error: error.clone(),
            http,
        };
        match self.dead_letters.write(letter).await {
            Ok(()) => {
                let dead = delivery.dead(reason, &error);
                let tracked = tracks(delivery);
                let tracker = delivery.status.as_ref();
                self.status.dead_lettered(tracker, tracked, dead).await;
                if workflow::applies(&delivery.headers) {
                    let finished = self.dead_letters.workflows().finished(
                        &delivery.headers,
                        &delivery.id,
                        MemberOutcome::Dead,
                        None,
                    );
                    if let Err(err) = Box::pin(finished).await {
                        // Dead-lettered again on redelivery (the letter is deduplicated).
                        workflow::log_failure(&err);
                        if let Err(err) = message
                            .ack_with(AckKind::Nak(Some(workflow::RETRY_DELAY)))
                            .await
                        {
                            tracing::warn!(error = %err, "could not NAK the task; it returns after ack_wait");
                        }
                        return;
                    }
                }
                if let Err(err) = message.ack_with(AckKind::Term).await {
                    tracing::warn!(error = %err, "dead letter written but the task was not terminated; it will be dead-lettered again (deduplicated)");
                }
                self.dead_letters.attempts().forget(delivery.sequence).await;
            }
            Err(err) => {
                // The task stays in the stream (never dropped). Retry with a growing delay: a
                // cause that lasts (a full dead-letter stream, missing permissions) must not
                // flood the logs; `jetq.tasks.dead_letter_failures` and `jetq queues`
                // (STRANDED) show it.
                let delay = dead_letter::retry_delay(delivery.delivered);
                tracing::error!(error = %err, retry_in = ?delay, "could not write the dead letter; the task stays in the task stream and the write is retried");
                if let Err(err) = message.ack_with(AckKind::Nak(Some(delay))).await {
                    tracing::warn!(error = %err, "could not NAK the task either; it returns after ack_wait");
                }
            }
        }
    }
}

/// True if the task keeps a status record: its type opts in or its message asks.
fn tracks(delivery: &Delivery<'_>) -> bool {
    delivery.status.is_some()
        || status::has_track_header(Some(&delivery.headers))
        || delivery
            .registration
            .is_some_and(|registration| registration.options.track_status)
}

impl Delivery<'_> {
    fn flow_task(&self) -> FlowTask<'_> {
        FlowTask {
            queue: &self.queue,
            task: &self.task,
            id: &self.id,
            sequence: self.sequence,
            delivered: self.delivered,
            headers: &self.headers,
        }
    }

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
