//! The per-task attempt record in the attempt-history bucket: the errors of failed attempts
//! (for the dead letter) and the hand-backs that must not count as attempts.
//!
//! The rule itself (attempt = delivered − hand-backs) lives in the contract
//! ([`jetq_contract::attempts`]), so workers in any language count alike.
//!
//! Every write is a read-modify-write of one key. Only the worker holding the current delivery
//! of a task writes its record, so there is no concurrent writer to lose an update to. Failures
//! here are logged and tolerated: a lost failure costs a line of history; a lost hand-back makes
//! the next delivery count one attempt too many (never one too few, so a task can't retry
//! forever because the bucket is down).

use async_nats::jetstream::kv;
use jetq_contract::{attempts::AttemptRecord, AttemptFailure};

/// Reads and writes attempt records; a no-op when the bucket is not available.
#[derive(Clone)]
pub(crate) struct Attempts {
    store: Option<kv::Store>,
}

impl Attempts {
    pub(crate) fn new(store: Option<kv::Store>) -> Self {
        Attempts { store }
    }

    /// The task's record; empty when it has none or it cannot be read.
    pub(crate) async fn record(&self, sequence: u64) -> AttemptRecord {
        let Some(store) = &self.store else {
            return AttemptRecord::default();
        };
        match store.get(sequence.to_string()).await {
            Ok(Some(bytes)) => AttemptRecord::from_json(&bytes).unwrap_or_else(|err| {
                tracing::warn!(sequence, error = %err, "unreadable attempt record; starting a new one");
                AttemptRecord::default()
            }),
            Ok(None) => AttemptRecord::default(),
            Err(err) => {
                tracing::warn!(sequence, error = %err, "could not read the attempt record");
                AttemptRecord::default()
            }
        }
    }

    /// Records a failed attempt.
    pub(crate) async fn record_failure(&self, sequence: u64, failure: AttemptFailure) {
        self.update(sequence, |record| record.push_failure(failure))
            .await;
    }

    /// Records a hand-back. Called before the NAK that hands the task back, so the next
    /// delivery reads it.
    pub(crate) async fn record_hand_back(&self, sequence: u64) {
        self.update(sequence, |record| {
            record.hand_backs = record.hand_backs.saturating_add(1);
            tracing::debug!(
                sequence,
                hand_backs = record.hand_backs,
                "hand-back recorded"
            );
        })
        .await;
    }

    async fn update(&self, sequence: u64, change: impl FnOnce(&mut AttemptRecord)) {
        let Some(store) = &self.store else { return };
        let mut record = self.record(sequence).await;
        change(&mut record);
        match record.to_json() {
            Ok(bytes) => {
                if let Err(err) = store.put(sequence.to_string(), bytes.into()).await {
                    tracing::warn!(sequence, error = %err, "could not update the attempt record");
                }
            }
            Err(err) => {
                tracing::warn!(sequence, error = %err, "could not encode the attempt record")
            }
        }
    }

    /// Drops a task's record once it ended (succeeded, dead-lettered or cancelled).
    pub(crate) async fn forget(&self, sequence: u64) {
        if let Some(store) = &self.store {
            if let Err(err) = store.purge(sequence.to_string()).await {
                tracing::debug!(sequence, error = %err, "could not purge the attempt record");
            }
        }
    }
}
