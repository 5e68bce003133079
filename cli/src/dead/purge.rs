//! Removing dead letters: a purge of a selection (one server-side purge when a subject filter
//! is enough; else, for a filter read from the first letter on, one purge per subject for each
//! run of letters that all matched, and one deletion each for the rest), the deletion of one
//! letter, and of its body object.

use std::collections::BTreeMap;

use async_nats::jetstream::{self, response::Response, stream::Stream, ErrorCode};
use futures::{stream::FuturesUnordered, StreamExt};
use serde::Serialize;

use super::{DeadFilter, DeadLetter, ItemFailure, Progress, Selection};
use crate::{admin::Admin, error::AdminError};

/// Letters held for purges by subject before they are purged (so progress moves).
const RUN_FLUSH: usize = 5_000;

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
        // Letters of a subject whose every letter so far matched: removed by one purge of the
        // subject up to the last of them instead of one deletion each (the server handles
        // about 1,400 deletions a second; a purge removes any number at once).
        let mut runs: BTreeMap<String, Vec<DeadLetter>> = BTreeMap::new();
        let mut held = 0usize;
        while let Some(dead) = source.next().await? {
            report.matched += 1;
            if dry_run {
                report.sequences.push(dead.sequence);
                progress.inc(1);
                continue;
            }
            let subject = self.subjects().dead(&dead.queue, &dead.task);
            if source.all_matched_so_far(&subject) {
                runs.entry(subject).or_default().push(dead);
                held += 1;
                if held >= RUN_FLUSH {
                    self.purge_runs(&stream, &mut runs, &mut report, progress)
                        .await;
                    held = 0;
                }
                continue;
            }
            if let Some(run) = runs.remove(&subject) {
                // A letter of this subject did not match after these: purge the run now, up
                // to its last letter (the unmatched one is above it and stays).
                held -= run.len();
                let mut single = BTreeMap::from([(subject, run)]);
                self.purge_runs(&stream, &mut single, &mut report, progress)
                    .await;
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
        self.purge_runs(&stream, &mut runs, &mut report, progress)
            .await;
        report.sequences.sort_unstable();
        Ok(report)
    }

    /// Removes each run of letters (every letter of its subject up to the run's last one
    /// matched and is in the run) with one purge of the subject below the run's last sequence
    /// plus one; a failed purge fails each letter of its run.
    async fn purge_runs(
        &self,
        stream: &Stream,
        runs: &mut BTreeMap<String, Vec<DeadLetter>>,
        report: &mut PurgeReport,
        progress: &dyn Progress,
    ) {
        for (subject, run) in std::mem::take(runs) {
            let Some(last) = run.iter().map(|d| d.sequence).max() else {
                continue;
            };
            let outcome = stream
                .purge()
                .filter(subject.as_str())
                .sequence(last + 1)
                .await;
            match outcome {
                Ok(_) => {
                    for dead in &run {
                        self.forget_dead_payload(dead).await;
                        report.deleted += 1;
                        report.sequences.push(dead.sequence);
                    }
                }
                Err(err) => {
                    let error = format!("cannot purge {subject} below {}: {err}", last + 1);
                    for dead in &run {
                        report.failed += 1;
                        report.failures.push(ItemFailure {
                            dead_sequence: dead.sequence,
                            error: error.clone(),
                        });
                    }
                }
            }
            progress.inc(run.len() as u64);
        }
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
