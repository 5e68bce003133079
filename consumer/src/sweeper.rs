//! The sweeper: dead-letters tasks whose every delivery was spent without a worker recording
//! a final result.
//!
//! Workers dead-letter a task on its last allowed attempt, and keep one delivery in reserve to
//! dead-letter a task whose last attempt crashed its worker. If even that delivery is lost (the
//! worker died while writing the dead letter, or `max_deliver` was lowered below a type's
//! attempts), the server stops redelivering, publishes a `MAX_DELIVERIES` advisory and leaves the
//! task in the WorkQueue stream forever. The advisory stream captures those advisories; the
//! sweeper (running in every worker, sharing one durable) copies each stranded task to dead
//! letters and then deletes it from the task stream.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::PullConsumer,
    stream::{LastRawMessageErrorKind, Stream},
    AckKind,
};
use futures::StreamExt;
use jetq_contract::{DeadReason, Subjects};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{
    dead_letter::{self, DeadLetters, LetterToWrite},
    status::{self, StatusRecorder},
};

/// The fields of `io.nats.jetstream.advisory.v1.max_deliver` that the sweeper needs.
#[derive(Debug, Deserialize)]
struct MaxDeliveriesAdvisory {
    stream_seq: u64,
    deliveries: u64,
}

pub(crate) struct Sweeper {
    pub(crate) advisories: PullConsumer,
    pub(crate) tasks: Stream,
    pub(crate) subjects: Subjects,
    pub(crate) dead_letters: DeadLetters,
    pub(crate) poll: Duration,
    /// Records the dead letter of a tracked task in its status.
    pub(crate) status: StatusRecorder,
}

impl Sweeper {
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let batch = self
                .advisories
                .batch()
                .max_messages(16)
                .expires(self.poll)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(batch) => batch,
                Err(err) => {
                    tracing::warn!(error = %err, "sweeper could not pull advisories");
                    tokio::select! {
                        _ = tokio::time::sleep(self.poll) => continue,
                        _ = shutdown.cancelled() => return,
                    }
                }
            };
            loop {
                let next = tokio::select! {
                    next = batch.next() => next,
                    _ = shutdown.cancelled() => return,
                };
                match next {
                    Some(Ok(advisory)) => self.sweep(advisory).await,
                    Some(Err(err)) => {
                        tracing::debug!(error = %err, "sweeper pull ended");
                        break;
                    }
                    None => break,
                }
            }
        }
    }

    async fn sweep(&self, advisory: jetstream::Message) {
        let parsed: MaxDeliveriesAdvisory = match serde_json::from_slice(&advisory.payload) {
            Ok(parsed) => parsed,
            Err(err) => {
                tracing::error!(error = %err, "unreadable max-deliveries advisory; dropping it");
                let _ = advisory.ack_with(AckKind::Term).await;
                return;
            }
        };
        let outcome = self.move_to_dead_letters(&parsed).await;
        let action = match outcome {
            Ok(()) => AckKind::Ack,
            Err(err) => {
                // Backs off like a worker's failed dead-letter write: a lasting cause must not
                // repeat every few seconds forever (the metric and `jetq queues` show it).
                let delivered = advisory.info().map(|info| info.delivered).unwrap_or(1);
                let delay = dead_letter::retry_delay(u64::try_from(delivered).unwrap_or(1));
                tracing::warn!(sequence = parsed.stream_seq, error = %err, retry_in = ?delay, "sweeper could not move a stranded task to dead letters; will retry");
                AckKind::Nak(Some(delay))
            }
        };
        if let Err(err) = advisory.ack_with(action).await {
            tracing::warn!(error = %err, "sweeper could not ack an advisory");
        }
    }

    async fn move_to_dead_letters(&self, advisory: &MaxDeliveriesAdvisory) -> Result<(), String> {
        let sequence = advisory.stream_seq;
        let message = match self.tasks.get_raw_message(sequence).await {
            Ok(message) => message,
            // Already gone: a worker dead-lettered (or finished) it after all.
            Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(()),
            Err(err) => return Err(format!("cannot read task {sequence}: {err}")),
        };
        let (queue, task) = self
            .subjects
            .parse_task(message.subject.as_str())
            .unwrap_or(("unknown", "unknown"));
        let error = format!(
            "the server stopped redelivering after {} deliveries (max_deliver) and no worker \
             recorded a final result",
            advisory.deliveries
        );
        let attempts = u32::try_from(advisory.deliveries).unwrap_or(u32::MAX);
        let letter = LetterToWrite {
            queue,
            task,
            sequence,
            headers: Some(&message.headers),
            payload: message.payload.clone(),
            reason: DeadReason::DeliveriesExhausted,
            attempts,
            error: error.clone(),
            http: None,
        };
        self.dead_letters
            .write(letter)
            .await
            .map_err(|err| format!("cannot write dead letter for task {sequence}: {err}"))?;
        let id = status::message_id(&message.headers);
        let dead = status::Dead {
            id: &id,
            queue,
            task,
            sequence,
            attempts,
            reason: DeadReason::DeliveriesExhausted,
            error: &error,
        };
        let tracked = status::has_track_header(Some(&message.headers));
        self.status.dead_lettered(None, tracked, dead).await;
        self.dead_letters
            .workflows()
            .finished(
                &message.headers,
                &id,
                jetq_contract::workflow::MemberOutcome::Dead,
                None,
            )
            .await
            .map_err(|err| {
                format!("task {sequence} dead-lettered, its batch or chain not told: {err}")
            })?;
        self.tasks
            .delete_message(sequence)
            .await
            .map_err(|err| format!("dead letter written but task {sequence} not deleted: {err}"))?;
        self.dead_letters.attempts().forget(sequence).await;
        Ok(())
    }
}
