//! Removing dead letters: a purge of a selection (one server-side purge when a subject filter
//! is enough, else one deletion each), the deletion of one letter, and of its body object.

use async_nats::jetstream::{self, response::Response, stream::Stream, ErrorCode};
use futures::{stream::FuturesUnordered, StreamExt};
use serde::Serialize;

use super::{DeadFilter, DeadLetter, ItemFailure, Progress, Selection};
use crate::{admin::Admin, error::AdminError};

/// The outcome of a purge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PurgeReport {
    /// Dead letters selected.
    pub matched: u64,
    /// Deleted.
    pub deleted: u64,
    /// Left in place because their deletion failed.
    pub failed: u64,
    /// True for a dry run.
    pub dry_run: bool,
    /// Sequences deleted (for a dry run: that would be; empty when the server purged a whole
    /// subject at once).
    pub sequences: Vec<u64>,
    /// Each failure.
    pub failures: Vec<ItemFailure>,
}

impl Admin {
    /// The second half of a replay: deletes dead letter `sequence`. `Ok(false)` if it was
    /// already gone.
    pub async fn remove_dead_letter(&self, sequence: u64) -> Result<bool, AdminError> {
        let stream = self.required_dead_stream().await?;
        delete_dead(self.jetstream(), &stream_name(&stream), sequence).await
    }

    /// Deletes the selected dead letters without replaying them.
    pub async fn purge(
        &self,
        selection: &Selection,
        dry_run: bool,
        progress: &dyn Progress,
    ) -> Result<PurgeReport, AdminError> {
        let stream = self.required_dead_stream().await?;
        let mut report = PurgeReport {
            matched: 0,
            deleted: 0,
            failed: 0,
            dry_run,
            sequences: Vec::new(),
            failures: Vec::new(),
        };
        // A filter of queue and task only: one purge request for the subject, bounded by the
        // last sequence now so dead letters arriving meanwhile are kept.
        if let (Selection::Filter(filter), false) = (selection, dry_run) {
            let subject_only = DeadFilter {
                queue: filter.queue.clone(),
                task: filter.task.clone(),
                ..DeadFilter::default()
            };
            if *filter == subject_only {
                filter.validate()?;
                let mut stream = stream;
                let last = stream
                    .info()
                    .await
                    .map_err(|err| AdminError::nats("cannot read the dead-letter stream", err))?
                    .state
                    .last_sequence;
                let response = stream
                    .purge()
                    .filter(filter.subject(self.subjects()))
                    .sequence(last + 1)
                    .await
                    .map_err(|err| AdminError::nats("cannot purge dead letters", err))?;
                progress.set_total(response.purged);
                progress.inc(response.purged);
                report.matched = response.purged;
                report.deleted = response.purged;
                return Ok(report);
            }
        }
        let name = stream_name(&stream);
        let mut source = self.select(selection).await?;
        progress.set_total(source.estimate());
        let mut in_flight = FuturesUnordered::new();
        while let Some(dead) = source.next().await? {
            report.matched += 1;
            if dry_run {
                report.sequences.push(dead.sequence);
                progress.inc(1);
                continue;
            }
            while in_flight.len() >= 64 {
                if let Some((sequence, outcome)) = in_flight.next().await {
                    purged(&mut report, sequence, outcome, progress);
                }
            }
            let (js, name) = (self.jetstream(), &name);
            in_flight.push(async move {
                let outcome = delete_dead(js, name, dead.sequence).await;
                if outcome.is_ok() {
                    self.forget_dead_payload(&dead).await;
                }
                (dead.sequence, outcome)
            });
        }
        while let Some((sequence, outcome)) = in_flight.next().await {
            purged(&mut report, sequence, outcome, progress);
        }
        report.sequences.sort_unstable();
        Ok(report)
    }

    /// Deletes a dead letter's body object once the letter is gone. Best effort: a body left
    /// behind expires with the store (`JETQ_DEAD_MAX_AGE`).
    pub(super) async fn forget_dead_payload(&self, dead: &DeadLetter) {
        let Some(object) = &dead.payload_object else {
            return;
        };
        let bucket = self.subjects().dead_payloads_bucket();
        let deleted = match self.jetstream().get_object_store(&bucket).await {
            Ok(store) => store.delete(object).await.map_err(|err| err.to_string()),
            Err(err) => Err(err.to_string()),
        };
        if let Err(err) = deleted {
            tracing::warn!(object = %object, error = %err, "could not delete the body of a removed dead letter; it expires with the store");
        }
    }
}

fn purged(
    report: &mut PurgeReport,
    sequence: u64,
    outcome: Result<bool, AdminError>,
    progress: &dyn Progress,
) {
    match outcome {
        Ok(_) => {
            report.deleted += 1;
            report.sequences.push(sequence);
        }
        Err(err) => {
            report.failed += 1;
            report.failures.push(ItemFailure {
                dead_sequence: sequence,
                error: err.to_string(),
            });
        }
    }
    progress.inc(1);
}

/// Deletes one dead letter; `Ok(false)` if it was already gone.
///
/// Sent with `no_erase`: the message is removed from the stream at once without overwriting
/// its bytes on disk first (the client's `delete_message` asks for that secure erase, which
/// made purging thousands of dead letters take minutes). Storage is reclaimed when the block is
/// compacted, as for a stream purge.
pub(super) async fn delete_dead(
    js: &jetstream::Context,
    stream: &str,
    sequence: u64,
) -> Result<bool, AdminError> {
    #[derive(serde::Deserialize)]
    struct Deleted {
        success: bool,
    }
    let response: Result<Response<Deleted>, _> = js
        .request(
            format!("STREAM.MSG.DELETE.{stream}"),
            &serde_json::json!({ "seq": sequence, "no_erase": true }),
        )
        .await;
    match response {
        Ok(Response::Ok(deleted)) => Ok(deleted.success),
        Ok(Response::Err { error })
            if error.error_code() == ErrorCode::NO_MESSAGE_FOUND
                || error.error_code() == ErrorCode::SEQUENCE_NOT_FOUND
                || error.to_string().contains("no message found") =>
        {
            Ok(false)
        }
        Ok(Response::Err { error }) => Err(AdminError::nats(
            format!("cannot delete dead letter {sequence}"),
            error,
        )),
        Err(err) => Err(AdminError::nats(
            format!("cannot delete dead letter {sequence}"),
            err,
        )),
    }
}

pub(super) fn stream_name(stream: &Stream) -> String {
    stream.cached_info().config.name.clone()
}
