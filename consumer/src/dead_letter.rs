//! Dead letters and the attempt history that goes into them.
//!
//! A dead letter is the original task (payload and headers unchanged) published to
//! `<prefix>.dead.<queue>.<task>` with the failure record added in headers. Its `Nats-Msg-Id`
//! is derived from the task's stream sequence, so a worker and the sweeper writing the same
//! dead letter (or a worker retrying after a lost ack) store it once.
//!
//! Errors of earlier attempts would be lost with each redelivery (a NAK cannot change the
//! message), so each failed attempt is recorded in the task's attempt record (`attempts.rs`);
//! the record is read when the task dies and deleted when it ends either way.
//!
//! A letter always fits: a body too large to travel beside the failure headers goes to the
//! dead-letter body store and the letter names it (`jetq_contract::dead`).

use async_nats::{
    jetstream::{context::PublishError, message::PublishMessage},
    HeaderMap,
};
use std::time::Duration;

use bytes::Bytes;
use jetq_contract::{
    dead::{headers_wire_len, payload_object_name},
    dead_letter,
    failure::truncate_error,
    headers, AttemptFailure, DeadLetterHeaders, DeadReason, FailureRecord, HttpFailure, Topology,
};
use tracing::Instrument;

use crate::{
    attempts::Attempts,
    telemetry::{self, TaskLabels, WorkerMetrics},
};

/// Everything needed to write one dead letter.
pub(crate) struct LetterToWrite<'a> {
    pub(crate) queue: &'a str,
    pub(crate) task: &'a str,
    pub(crate) sequence: u64,
    pub(crate) headers: Option<&'a HeaderMap>,
    pub(crate) payload: Bytes,
    pub(crate) reason: DeadReason,
    pub(crate) attempts: u32,
    pub(crate) error: String,
    /// The HTTP response behind the final error, if the handler attached one.
    pub(crate) http: Option<HttpFailure>,
}

/// Why a dead letter could not be written. The task then stays in the task stream (it is
/// never dropped) and the write is tried again later.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeadLetterError {
    /// The dead-letter stream did not store the letter (unreachable, full, no permission).
    #[error("could not publish the dead letter: {0}")]
    Publish(#[from] PublishError),
    /// The body was too large to travel in the letter and could not be stored beside it.
    #[error("could not store the body of the dead letter in {bucket}: {problem}")]
    PayloadStore {
        /// The object store.
        bucket: String,
        /// What failed.
        problem: String,
    },
    /// Even with the body moved out and the failure record cut to its final error, the
    /// task's own headers leave no room for the dead-letter headers.
    #[error(
        "the dead letter's headers alone take {size} bytes, over the server's max_payload of \
         {max}: the task's own headers are too large"
    )]
    TooLarge {
        /// Bytes needed.
        size: usize,
        /// The server's `max_payload`.
        max: usize,
    },
}

impl DeadLetterError {
    /// The `error.type` of a failed write, for metrics and spans.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            DeadLetterError::Publish(_) => "publish",
            DeadLetterError::PayloadStore { .. } => "payload_store",
            DeadLetterError::TooLarge { .. } => "too_large",
        }
    }
}

/// Writes dead letters; reads the attempt history that goes into them.
#[derive(Clone)]
pub(crate) struct DeadLetters {
    topology: Topology,
    attempts: Attempts,
    metrics: WorkerMetrics,
    /// May create the dead-letter body store if it is missing (`JETQ_PROVISION`).
    provision: bool,
    /// Batches and chains: the other bookkeeping of a task's end, shared the same way by the
    /// executor and the sweeper (see `workflow.rs`).
    workflows: std::sync::Arc<crate::workflow::WorkflowHooks>,
}

impl DeadLetters {
    pub(crate) fn new(
        topology: Topology,
        attempts: Attempts,
        metrics: WorkerMetrics,
        provision: bool,
    ) -> Self {
        DeadLetters {
            workflows: std::sync::Arc::new(crate::workflow::WorkflowHooks::new(
                topology.clone(),
                provision,
            )),
            topology,
            attempts,
            metrics,
            provision,
        }
    }

    /// The batch and chain bookkeeping of tasks that end.
    pub(crate) fn workflows(&self) -> &crate::workflow::WorkflowHooks {
        &self.workflows
    }

    /// The worker's JetStream context.
    pub(crate) fn jetstream(&self) -> &async_nats::jetstream::Context {
        self.topology.jetstream()
    }

    /// The attempt records (history and hand-backs) of tasks.
    pub(crate) fn attempts(&self) -> &Attempts {
        &self.attempts
    }

    /// Publishes the dead letter and waits for the stream's ack. Only after `Ok` may the task
    /// be removed from the task stream. Traced as a `send` span linked to the task's trace.
    pub(crate) async fn write(&self, letter: LetterToWrite<'_>) -> Result<(), DeadLetterError> {
        let subject = self.topology.subjects().dead(letter.queue, letter.task);
        let task_id = letter
            .headers
            .and_then(|map| map.get(headers::MSG_ID))
            .map(|value| value.as_str().to_owned())
            .unwrap_or_default();
        let span = telemetry::dead_letter_span(
            &subject,
            &dead_letter::dead_letter_id(letter.sequence, &task_id),
            letter.queue,
            letter.task,
            letter.reason.as_str(),
            letter.headers,
        );
        let (queue, task, reason) = (letter.queue, letter.task, letter.reason.as_str());
        let result = self.publish(subject, letter).instrument(span.clone()).await;
        let labels = TaskLabels::of(queue, task);
        match &result {
            Ok(()) => self.metrics.dead_lettered(&labels, reason),
            Err(err) => {
                telemetry::record_failure(&span, "dead_letter_write", &err.to_string());
                self.metrics.dead_letter_failed(&labels, err.kind());
            }
        }
        result
    }

    async fn publish(
        &self,
        subject: String,
        letter: LetterToWrite<'_>,
    ) -> Result<(), DeadLetterError> {
        let history = self.attempts.record(letter.sequence).await.failures;
        // A replayed dead letter's task may still carry dead-letter headers: a new letter must
        // not inherit them (its body-store headers above all).
        let mut map = letter
            .headers
            .map(dead_letter::without_dead_letter_headers)
            .unwrap_or_default();
        let task_id = map
            .get(headers::MSG_ID)
            .map(|value| value.as_str().to_owned())
            .unwrap_or_default();
        let enqueued_at = map
            .get(headers::ENQUEUED_AT)
            .map(|value| value.as_str().to_owned());
        let record = FailureRecord {
            reason: letter.reason,
            attempts: letter.attempts,
            error: truncate_error(&letter.error),
            history,
            enqueued_at,
            dead_at: jetq_contract::time::now(),
            http: letter.http,
        };
        let mut dead = DeadLetterHeaders::new(&task_id, letter.sequence, record);
        dead.write_to(&mut map);

        let max = self.topology.jetstream().client().max_payload();
        let mut payload = letter.payload;
        if headers_wire_len(&map) + payload.len() > max {
            // The letter would be refused: keep the body beside it instead.
            let object = payload_object_name(letter.sequence, &task_id);
            self.store_payload(&object, &payload).await?;
            dead.payload_object = Some(object.clone());
            dead.payload_size = Some(payload.len() as u64);
            dead.write_to(&mut map);
            payload = Bytes::new();
            if headers_wire_len(&map) > max {
                if let Some(record) = dead.failure.as_mut() {
                    record.history.clear();
                    record.http = None;
                    record.error = cut(&record.error, 256);
                }
                dead.write_to(&mut map);
            }
            let size = headers_wire_len(&map);
            if size > max {
                return Err(DeadLetterError::TooLarge { size, max });
            }
            tracing::info!(object = %object, "dead letter too large for one message: its body went to the dead-letter body store");
        }
        let ack = self
            .topology
            .jetstream()
            .send_publish(
                subject,
                PublishMessage::build().payload(payload).headers(map),
            )
            .await?;
        ack.await?;
        tracing::warn!(
            task_id = %task_id,
            queue = letter.queue,
            task = letter.task,
            reason = letter.reason.as_str(),
            attempts = letter.attempts,
            error = dead.failure.as_ref().map_or("", |record| record.error.as_str()),
            "task moved to dead letters"
        );
        Ok(())
    }

    /// Stores a dead letter's body in the body store, creating the store if it is missing and
    /// this process provisions.
    async fn store_payload(&self, object: &str, payload: &Bytes) -> Result<(), DeadLetterError> {
        let bucket = self.topology.subjects().dead_payloads_bucket();
        let failed = |problem: String| DeadLetterError::PayloadStore {
            bucket: bucket.clone(),
            problem,
        };
        let store = match self.topology.dead_payload_store().await {
            Ok(store) => store,
            Err(missing) if self.provision => {
                tracing::info!(error = %missing, "creating the dead-letter body store");
                self.topology
                    .ensure_dead_payload_store()
                    .await
                    .map_err(|err| failed(err.to_string()))?;
                self.topology
                    .dead_payload_store()
                    .await
                    .map_err(|err| failed(err.to_string()))?
            }
            Err(missing) => return Err(failed(missing.to_string())),
        };
        let mut reader = payload.as_ref();
        store
            .put(object, &mut reader)
            .await
            .map_err(|err| failed(err.to_string()))?;
        Ok(())
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// How long a task whose dead letter could not be written waits before the write is tried
/// again: 5 s, doubling with each delivery, at most 5 minutes.
pub(crate) fn retry_delay(delivered: u64) -> Duration {
    let doublings = u32::try_from(delivered.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(6);
    (Duration::from_secs(5) * 2u32.pow(doublings)).min(Duration::from_secs(300))
}

/// Builds the record of one failed attempt, timestamped now.
pub(crate) fn attempt_failure(
    attempt: u32,
    outcome: jetq_contract::AttemptOutcome,
    error: &str,
) -> AttemptFailure {
    AttemptFailure {
        attempt,
        outcome,
        error: truncate_error(error),
        at: jetq_contract::time::now(),
    }
}
