//! Dead letters and the attempt history that goes into them.
//!
//! A dead letter is the original task (payload and headers unchanged) published to
//! `<prefix>.dead.<queue>.<task>` with the failure record added in headers. Its `Nats-Msg-Id`
//! is derived from the task's stream sequence, so a worker and the sweeper writing the same
//! dead letter (or a worker retrying after a lost ack) store it once.
//!
//! Errors of earlier attempts would be lost with each redelivery (a NAK cannot change the
//! message), so each failed attempt is recorded in a KV bucket keyed by the task's sequence;
//! the record is read when the task dies and deleted when it ends either way.

use async_nats::{
    jetstream::{self, kv, message::PublishMessage},
    HeaderMap,
};
use bytes::Bytes;
use jetq_contract::{
    failure::{truncate_error, MAX_KEPT_ATTEMPTS},
    headers, AttemptFailure, DeadReason, FailureRecord, HttpFailure, Subjects,
};
use tracing::Instrument;

use crate::telemetry::{self, TaskLabels, WorkerMetrics};

/// Everything needed to write one dead letter.
pub(crate) struct DeadLetter<'a> {
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

/// Writes dead letters and keeps the per-attempt error history.
#[derive(Clone)]
pub(crate) struct DeadLetters {
    js: jetstream::Context,
    subjects: Subjects,
    history: Option<kv::Store>,
    metrics: WorkerMetrics,
}

impl DeadLetters {
    pub(crate) fn new(
        js: jetstream::Context,
        subjects: Subjects,
        history: Option<kv::Store>,
        metrics: WorkerMetrics,
    ) -> Self {
        DeadLetters {
            js,
            subjects,
            history,
            metrics,
        }
    }

    /// Records a failed attempt. Best effort: a lost record costs one line of history, never
    /// the task.
    pub(crate) async fn record_failure(&self, sequence: u64, failure: AttemptFailure) {
        let Some(store) = &self.history else { return };
        let mut history = self.history(sequence).await;
        history.push(failure);
        if history.len() > MAX_KEPT_ATTEMPTS {
            history.drain(..history.len() - MAX_KEPT_ATTEMPTS);
        }
        match serde_json::to_vec(&history) {
            Ok(bytes) => {
                if let Err(err) = store.put(sequence.to_string(), bytes.into()).await {
                    tracing::warn!(sequence, error = %err, "could not record the failed attempt");
                }
            }
            Err(err) => tracing::warn!(sequence, error = %err, "could not encode attempt history"),
        }
    }

    /// The recorded failures of a task, oldest first.
    pub(crate) async fn history(&self, sequence: u64) -> Vec<AttemptFailure> {
        let Some(store) = &self.history else {
            return Vec::new();
        };
        match store.get(sequence.to_string()).await {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Ok(None) => Vec::new(),
            Err(err) => {
                tracing::warn!(sequence, error = %err, "could not read attempt history");
                Vec::new()
            }
        }
    }

    /// Drops a task's history once it ended (succeeded or dead-lettered).
    pub(crate) async fn forget(&self, sequence: u64) {
        if let Some(store) = &self.history {
            if let Err(err) = store.purge(sequence.to_string()).await {
                tracing::debug!(sequence, error = %err, "could not purge attempt history");
            }
        }
    }

    /// Publishes the dead letter and waits for the stream's ack. Only after `Ok` may the task
    /// be removed from the task stream. Traced as a `send` span linked to the task's trace.
    pub(crate) async fn write(
        &self,
        letter: DeadLetter<'_>,
    ) -> Result<(), jetstream::context::PublishError> {
        let subject = self.subjects.dead(letter.queue, letter.task);
        let task_id = letter
            .headers
            .and_then(|map| map.get(headers::MSG_ID))
            .map(|value| value.as_str().to_owned())
            .unwrap_or_default();
        let span = telemetry::dead_letter_span(
            &subject,
            &format!("dead:{}:{}", letter.sequence, task_id),
            letter.queue,
            letter.task,
            letter.reason.as_str(),
            letter.headers,
        );
        let (queue, task, reason) = (letter.queue, letter.task, letter.reason.as_str());
        let result = self.publish(subject, letter).instrument(span.clone()).await;
        match &result {
            Ok(()) => self
                .metrics
                .dead_lettered(&TaskLabels::of(queue, task), reason),
            Err(err) => telemetry::record_failure(&span, "dead_letter_write", &err.to_string()),
        }
        result
    }

    async fn publish(
        &self,
        subject: String,
        letter: DeadLetter<'_>,
    ) -> Result<(), jetstream::context::PublishError> {
        let history = self.history(letter.sequence).await;
        let mut map = letter.headers.cloned().unwrap_or_default();
        let task_id = map
            .get(headers::MSG_ID)
            .map(|value| value.as_str().to_owned())
            .unwrap_or_default();
        let enqueued_at = map
            .get(headers::ENQUEUED_AT)
            .map(|value| value.as_str().to_owned());
        let dead_at = jetq_contract::time::now();
        let record = FailureRecord {
            reason: letter.reason,
            attempts: letter.attempts,
            error: truncate_error(&letter.error),
            history,
            enqueued_at,
            dead_at: dead_at.clone(),
            http: letter.http,
        };
        let record_json = serde_json::to_string(&record).unwrap_or_else(|_| "{}".to_owned());
        map.insert(
            headers::MSG_ID,
            format!("dead:{}:{}", letter.sequence, task_id).as_str(),
        );
        map.insert(headers::TASK_ID, task_id.as_str());
        map.insert(headers::DEAD_REASON, letter.reason.as_str());
        map.insert(headers::ATTEMPTS, letter.attempts.to_string().as_str());
        map.insert(headers::DEAD_AT, dead_at.as_str());
        map.insert(headers::TASK_SEQUENCE, letter.sequence.to_string().as_str());
        map.insert(headers::FAILURE, record_json.as_str());
        let ack = self
            .js
            .send_publish(
                subject,
                PublishMessage::build().payload(letter.payload).headers(map),
            )
            .await?;
        ack.await?;
        tracing::warn!(
            task_id = %task_id,
            queue = letter.queue,
            task = letter.task,
            reason = letter.reason.as_str(),
            attempts = letter.attempts,
            error = %record.error,
            "task moved to dead letters"
        );
        Ok(())
    }
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
