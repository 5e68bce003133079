//! Replaying dead letters: re-enqueue each, then remove it.
//!
//! A replay publishes the dead letter's payload, byte for byte, to its task subject with the
//! original headers (so `traceparent`/`tracestate`, per-task overrides and any custom header
//! survive), minus the dead-letter headers and every `Nats-*` header, with
//!
//! - `Nats-Msg-Id` = `replay:<dead-letter sequence>:<task id>` ([`replay_id`]): deterministic, so
//!   replaying the same dead letter twice inside the task stream's duplicate window stores one
//!   task, and
//! - `Jetq-Enqueued-At` = now: the replayed task is a new task with a fresh attempt count
//!   (the attempt number is JetStream's delivery count of the new message).
//!
//! A dead letter's subject names the queue only; its priority level (PROTOCOL §12) is the
//! task's `Jetq-Priority` header, so a task that was `high` or `low` is replayed to its level's
//! subject (`<prefix>.task.<queue>~high.<task>`), header kept. A value that is not a level
//! (`high`, `normal`, `low`) — written by hand or by a newer producer — does not stop the
//! replay: the task is replayed at `normal` without the header, and the item carries a
//! warning saying so ([`Replayed::warning`]), so the letter is not stuck in the stream.
//!
//! The dead letter is deleted only **after** the task stream acknowledged the publish (for a
//! filter read from each subject's first letter, the acknowledged letters of a subject are
//! removed together by one purge of the subject below the last of them, up to 5,000 at a time;
//! a letter whose replay failed stays, and nothing above it is purged). A crash
//! between the two leaves the dead letter in place; replaying it again is deduplicated by the
//! server within the duplicate window (2 minutes by default) and, after it, stores a second copy.
//! So a crash yields a duplicate at worst, never a loss.

use std::collections::BTreeMap;

use async_nats::{
    jetstream::{
        context::{PublishAckFuture, PublishError},
        stream::Stream,
    },
    HeaderMap,
};
use bytes::Bytes;
use futures::{stream::FuturesUnordered, StreamExt};
use jetq_contract::{
    dead::headers_wire_len,
    headers,
    publish::{self, Outgoing, Publisher},
    Priority, Subjects,
};
use serde::Serialize;

use super::{
    purge::{delete_dead, stream_name},
    DeadLetter, ItemFailure, Progress, Selection, DEAD_LETTER_HEADERS,
};
use crate::{admin::Admin, error::AdminError};

/// A prepared replay and the result of its first send.
type FirstSend = (Outgoing, Result<PublishAckFuture, PublishError>);

/// Longest `Nats-Msg-Id` the protocol allows.
const MAX_ID_LEN: usize = 256;

/// The `Nats-Msg-Id` of the replay of dead letter `dead_sequence`: `replay:<seq>:<task id>`.
///
/// The dead-letter sequence alone makes it unique; the task id is there for people reading
/// logs, cut (on a character boundary) so the id stays within 256 bytes.
///
/// ```
/// assert_eq!(jetq_cli::dead::replay_id(42, "01JABC"), "replay:42:01JABC");
/// assert!(jetq_cli::dead::replay_id(1, &"k".repeat(300)).len() <= 256);
/// ```
pub fn replay_id(dead_sequence: u64, task_id: &str) -> String {
    let mut id = format!("replay:{dead_sequence}:{task_id}");
    if id.len() > MAX_ID_LEN {
        let mut end = MAX_ID_LEN;
        while !id.is_char_boundary(end) {
            end -= 1;
        }
        id.truncate(end);
    }
    id
}

/// Options of a replay.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayOptions {
    /// Publishes awaiting their ack at once (at least 1).
    pub window: usize,
    /// Only report what would be replayed.
    pub dry_run: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            window: 64,
            dry_run: false,
        }
    }
}

/// One dead letter replayed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replayed {
    /// The dead letter's sequence (now deleted).
    pub dead_sequence: u64,
    /// Queue.
    pub queue: String,
    /// Task wire name.
    pub task: String,
    /// The priority level it is replayed at (`high`, `normal`, `low`): its `Jetq-Priority`.
    pub priority: String,
    /// The task subject it is replayed to (the level's).
    pub subject: String,
    /// Something to know about this replay that did not stop it: a `Jetq-Priority` that is
    /// not a level (the task was replayed at `normal`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// The original task id.
    pub task_id: Option<String>,
    /// The replayed task's id (`replay:<dead seq>:<task id>`).
    pub new_id: String,
    /// The replayed task's sequence in the task stream (of the first copy, for a duplicate).
    pub task_sequence: u64,
    /// True if the server already had this replay (an earlier run stored it, then stopped
    /// before removing the dead letter): no second copy was stored.
    pub duplicate: bool,
}

/// The outcome of a replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    /// Dead letters selected.
    pub matched: u64,
    /// Replayed and removed.
    pub replayed: u64,
    /// Of those, replays the server had already stored (deduplicated).
    pub duplicates: u64,
    /// Left in place because their replay or removal failed.
    pub failed: u64,
    /// True for a dry run: nothing was changed.
    pub dry_run: bool,
    /// Each replayed dead letter (for a dry run: each that would be).
    pub items: Vec<Replayed>,
    /// Each failure.
    pub failures: Vec<ItemFailure>,
}

impl ReplayReport {
    /// The error to report if any item failed (exit code 1); `None` if all succeeded.
    pub fn error(&self) -> Option<AdminError> {
        self.failures.first().map(|first| AdminError::Partial {
            operation: "replays",
            failed: self.failed,
            total: self.matched,
            first: format!("dead letter {}: {}", first.dead_sequence, first.error),
        })
    }
}

impl DeadLetter {
    /// The replay's headers made to fit the server's `max_payload`. A task stored just under
    /// the limit can be a few bytes too large to replay with the longer replay id: the short
    /// form `replay:<seq>` (unique per dead letter all the same) makes the room; past that, the
    /// error says what to change instead of the client failing on the size.
    fn fit_replay_headers(&self, mut out: HeaderMap, max: usize) -> Result<HeaderMap, AdminError> {
        if headers_wire_len(&out) + self.body_len() <= max {
            return Ok(out);
        }
        out.insert(
            headers::MSG_ID,
            format!("replay:{}", self.sequence).as_str(),
        );
        let size = headers_wire_len(&out) + self.body_len();
        if size > max {
            return Err(AdminError::Invalid(format!(
                "dead letter {}: its replay would be {size} bytes, over the server's max_payload \
                 of {max}; raise max_payload in the server configuration to replay it, or \
                 enqueue a smaller task in its place",
                self.sequence
            )));
        }
        Ok(out)
    }

    /// The task id used in the replay id: `Jetq-Task-Id`, else the dead letter's own id.
    fn id_for_replay(&self) -> String {
        self.task_id
            .clone()
            .or_else(|| {
                self.raw_headers
                    .get(headers::MSG_ID)
                    .map(|v| v.as_str().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned())
    }

    /// The priority level its replay goes to, from `Jetq-Priority` (absent: `normal`), and a
    /// warning when the header holds something that is not a level (then: `normal`).
    pub fn replay_priority(&self) -> (Priority, Option<String>) {
        let Some(value) = self.raw_headers.get(headers::PRIORITY) else {
            return (Priority::Normal, None);
        };
        match value.as_str().trim().parse::<Priority>() {
            Ok(level) => (level, None),
            Err(err) => (
                Priority::Normal,
                Some(format!(
                    "{}: {err}; replayed at normal, without the header",
                    headers::PRIORITY
                )),
            ),
        }
    }

    /// The subject, headers and payload its replay publishes: to the task subject of its
    /// level ([`DeadLetter::replay_priority`]).
    pub fn replay_message(&self, subjects: &Subjects) -> (String, HeaderMap, Bytes) {
        let (level, warning) = self.replay_priority();
        let mut out = HeaderMap::new();
        for (name, values) in self.raw_headers.iter() {
            let name: &str = name.as_ref();
            if name.starts_with("Nats-")
                || name == headers::ENQUEUED_AT
                || DEAD_LETTER_HEADERS.contains(&name)
                // A value that is not a level is not carried on to the replayed task.
                || (name == headers::PRIORITY && warning.is_some())
            {
                continue;
            }
            for value in values {
                out.append(name, value.as_str());
            }
        }
        out.insert(
            headers::MSG_ID,
            replay_id(self.sequence, &self.id_for_replay()).as_str(),
        );
        out.insert(headers::ENQUEUED_AT, jetq_contract::time::now().as_str());
        (
            subjects.task_at(&self.queue, level, &self.task),
            out,
            self.payload.clone(),
        )
    }
}

impl Admin {
    /// Replays the selected dead letters: re-enqueues each (see the module docs) and removes it
    /// once the task stream acknowledged the replay.
    ///
    /// Items that fail stay in the dead-letter stream and are listed in the report; the rest go
    /// on. Fails as a whole only when the selection cannot be read (or a sequence does not
    /// exist).
    pub async fn replay(
        &self,
        selection: &Selection,
        options: &ReplayOptions,
        progress: &dyn Progress,
    ) -> Result<ReplayReport, AdminError> {
        let dead_stream = self.required_dead_stream().await?;
        let tasks_stream = self.tasks_stream().await?;
        let tasks_name = tasks_stream.cached_info().config.name.clone();
        let mut report = ReplayReport {
            matched: 0,
            replayed: 0,
            duplicates: 0,
            failed: 0,
            dry_run: options.dry_run,
            items: Vec::new(),
            failures: Vec::new(),
        };
        let mut source = self.select(selection).await?;
        progress.set_total(source.estimate());
        let window = options.window.max(1);
        let mut in_flight = FuturesUnordered::new();
        // Letters of a subject whose every letter so far matched are not deleted one by one
        // after their ack: once acknowledged they wait in a run, removed by one purge of the
        // subject (the server does about 1,400 deletions a second; a purge removes any number).
        let mut runs = Runs::default();
        while let Some(dead) = source.next().await? {
            report.matched += 1;
            if options.dry_run {
                let (subject, headers, _) = dead.replay_message(self.subjects());
                let (level, warning) = dead.replay_priority();
                report.items.push(Replayed {
                    dead_sequence: dead.sequence,
                    queue: dead.queue.clone(),
                    task: dead.task.clone(),
                    priority: level.as_str().to_owned(),
                    subject,
                    warning,
                    task_id: dead.task_id.clone(),
                    new_id: headers
                        .get(headers::MSG_ID)
                        .map(|v| v.as_str().to_owned())
                        .unwrap_or_default(),
                    task_sequence: 0,
                    duplicate: false,
                });
                progress.inc(1);
                continue;
            }
            while in_flight.len() >= window {
                if let Some(outcome) = in_flight.next().await {
                    runs.settle(&mut report, outcome, progress);
                }
            }
            let subject = self.subjects().dead(&dead.queue, &dead.task);
            let in_run = source.all_matched_so_far(&subject) && !runs.broken.contains_key(&subject);
            // Sent in order here; acks and deletions complete concurrently.
            let first = self.send_replay(&dead).await;
            in_flight.push(self.finish_replay(
                &dead_stream,
                &tasks_name,
                dead,
                first,
                in_run.then_some(subject),
            ));
            if runs.held >= RUN_FLUSH {
                // Every letter read so far has its outcome before a run is purged.
                while let Some(outcome) = in_flight.next().await {
                    runs.settle(&mut report, outcome, progress);
                }
                self.remove_runs(&dead_stream, &mut runs, &mut report, progress)
                    .await;
            }
        }
        while let Some(outcome) = in_flight.next().await {
            runs.settle(&mut report, outcome, progress);
        }
        self.remove_runs(&dead_stream, &mut runs, &mut report, progress)
            .await;
        report.items.sort_by_key(|item| item.dead_sequence);
        report.failures.sort_by_key(|f| f.dead_sequence);
        Ok(report)
    }

    /// The first half of a replay: publishes the dead letter's replay and waits for the task
    /// stream's ack, without removing the dead letter. [`Admin::replay`] calls it and then
    /// [`Admin::remove_dead_letter`]; tests call it alone to stand for a replay that crashed
    /// between the two.
    pub async fn republish(&self, dead: &DeadLetter) -> Result<Replayed, AdminError> {
        let tasks_name = self.subjects().tasks_stream();
        let first = self.send_replay(dead).await;
        self.await_replay_ack(&tasks_name, dead, first).await
    }

    /// The replay of a dead letter as a message ready to publish: its body (from the body
    /// store if it was kept there) and headers made to fit, built once and resent unchanged.
    async fn prepare_replay(&self, dead: &DeadLetter) -> Result<Outgoing, AdminError> {
        let (subject, headers, mut payload) = dead.replay_message(self.subjects());
        if let (Some(object), true) = (&dead.payload_object, payload.is_empty()) {
            payload = self.dead_payload(object).await?;
        }
        let max = self.jetstream().client().max_payload();
        let headers = dead.fit_replay_headers(headers, max)?;
        let id = headers
            .get(headers::MSG_ID)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        Ok(Outgoing::new(subject, id, headers, payload))
    }

    fn replay_publisher(&self) -> Publisher {
        Publisher::new(self.jetstream().clone(), publish::DEFAULT_MAX_SENDS)
    }

    /// Prepares a replay and makes its first send (without awaiting the ack, so that many are
    /// pipelined); [`Admin::await_replay_ack`] awaits it.
    async fn send_replay(&self, dead: &DeadLetter) -> Result<FirstSend, AdminError> {
        let message = self.prepare_replay(dead).await?;
        let first = self.replay_publisher().send(&message).await;
        Ok((message, first))
    }

    /// Awaits the ack of a replay's first send, resending with the same id while the outcome
    /// is unknown (`jetq_contract::publish`), and checks that the task stream stored it.
    async fn await_replay_ack(
        &self,
        tasks_name: &str,
        dead: &DeadLetter,
        first: Result<FirstSend, AdminError>,
    ) -> Result<Replayed, AdminError> {
        let not_acknowledged = |message: String| {
            AdminError::nats(
                format!("replay of dead letter {} not acknowledged", dead.sequence),
                message,
            )
        };
        let (message, first) = first.map_err(|err| not_acknowledged(err.to_string()))?;
        let ack = self
            .replay_publisher()
            .confirm(&message, first)
            .await
            .map_err(|err| not_acknowledged(err.to_string()))?;
        if ack.stream != tasks_name {
            return Err(AdminError::nats(
                "the replay was stored in the wrong stream",
                format!(
                    "stream {} acknowledged it, expected {tasks_name}; check the stream subjects",
                    ack.stream
                ),
            ));
        }
        let (level, warning) = dead.replay_priority();
        Ok(Replayed {
            dead_sequence: dead.sequence,
            queue: dead.queue.clone(),
            task: dead.task.clone(),
            priority: level.as_str().to_owned(),
            subject: message.subject.clone(),
            warning,
            task_id: dead.task_id.clone(),
            new_id: message.id,
            task_sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// Awaits a replay's ack, then removes the dead letter — or, for a letter of a run
    /// (`run` names its subject), leaves it to [`Admin::remove_runs`].
    async fn finish_replay(
        &self,
        dead_stream: &Stream,
        tasks_name: &str,
        dead: DeadLetter,
        first: Result<FirstSend, AdminError>,
        run: Option<String>,
    ) -> Finished {
        let sequence = dead.sequence;
        let replayed = match self.await_replay_ack(tasks_name, &dead, first).await {
            Ok(replayed) => replayed,
            Err(err) => return Finished::Failed(sequence, err, run),
        };
        if let Some(subject) = run {
            return Finished::Acked(subject, Box::new(dead), replayed);
        }
        // Only now, with the replay stored, may the dead letter go.
        match self.remove_replayed(dead_stream, &dead, &replayed).await {
            Ok(()) => Finished::Done(replayed),
            Err(err) => Finished::Failed(sequence, err, None),
        }
    }

    /// Removes one replayed dead letter (and its body object).
    async fn remove_replayed(
        &self,
        dead_stream: &Stream,
        dead: &DeadLetter,
        replayed: &Replayed,
    ) -> Result<(), AdminError> {
        match delete_dead(self.jetstream(), &stream_name(dead_stream), dead.sequence).await {
            Ok(_) => {
                self.forget_dead_payload(dead).await;
                Ok(())
            }
            Err(err) => Err(AdminError::nats(
                format!(
                    "replayed as task {} but the dead letter could not be removed (replaying \
                     it again is deduplicated within the duplicate window)",
                    replayed.new_id
                ),
                err,
            )),
        }
    }

    /// Removes the acknowledged letters of each run: one purge of the subject below the run's
    /// end — or below its first letter whose replay failed, which stays; the run's letters
    /// above that one are deleted one by one.
    async fn remove_runs(
        &self,
        dead_stream: &Stream,
        runs: &mut Runs,
        report: &mut ReplayReport,
        progress: &dyn Progress,
    ) {
        for (subject, run) in std::mem::take(&mut runs.acked) {
            let bound = runs.broken.get(&subject).copied();
            let (below, above): (Vec<_>, Vec<_>) = run
                .into_iter()
                .partition(|(dead, _)| bound.is_none_or(|b| dead.sequence < b));
            if let Some(last) = below.iter().map(|(dead, _)| dead.sequence).max() {
                let end = bound.map_or(last + 1, |b| b.min(last + 1));
                let purged = dead_stream
                    .purge()
                    .filter(subject.as_str())
                    .sequence(end)
                    .await;
                for (dead, replayed) in below {
                    let outcome = match &purged {
                        Ok(_) => {
                            self.forget_dead_payload(&dead).await;
                            Ok(replayed)
                        }
                        Err(err) => Err(AdminError::nats(
                            format!(
                                "replayed as task {} but the dead letter could not be removed \
                                 (replaying it again is deduplicated within the duplicate \
                                 window)",
                                replayed.new_id
                            ),
                            err.to_string(),
                        )),
                    };
                    record(report, (dead.sequence, outcome), progress);
                }
            }
            for (dead, replayed) in above {
                let outcome = self
                    .remove_replayed(dead_stream, &dead, &replayed)
                    .await
                    .map(|()| replayed);
                record(report, (dead.sequence, outcome), progress);
            }
        }
        runs.held = 0;
    }
}

/// Letters held for purges by subject before they are removed (so progress moves).
const RUN_FLUSH: usize = 5_000;

/// How one replay ended in [`Admin::finish_replay`].
enum Finished {
    /// Replayed and removed.
    Done(Replayed),
    /// Replayed; the letter waits in its subject's run to be purged.
    Acked(String, Box<DeadLetter>, Replayed),
    /// Failed (the letter stays); the subject, for a letter of a run.
    Failed(u64, AdminError, Option<String>),
}

/// The runs of a replay: acknowledged letters by subject, and per subject the lowest letter of
/// a run whose replay failed (it stays, so nothing above it may be purged).
#[derive(Default)]
struct Runs {
    acked: BTreeMap<String, Vec<(DeadLetter, Replayed)>>,
    broken: BTreeMap<String, u64>,
    held: usize,
}

impl Runs {
    fn settle(&mut self, report: &mut ReplayReport, finished: Finished, progress: &dyn Progress) {
        match finished {
            Finished::Done(replayed) => {
                record(report, (replayed.dead_sequence, Ok(replayed)), progress)
            }
            Finished::Acked(subject, dead, replayed) => {
                self.acked
                    .entry(subject)
                    .or_default()
                    .push((*dead, replayed));
                self.held += 1;
            }
            Finished::Failed(sequence, err, run) => {
                if let Some(subject) = run {
                    let lowest = self.broken.entry(subject).or_insert(sequence);
                    *lowest = (*lowest).min(sequence);
                }
                record(report, (sequence, Err(err)), progress);
            }
        }
    }
}

fn record(
    report: &mut ReplayReport,
    (sequence, outcome): (u64, Result<Replayed, AdminError>),
    progress: &dyn Progress,
) {
    match outcome {
        Ok(replayed) => {
            report.replayed += 1;
            if replayed.duplicate {
                report.duplicates += 1;
            }
            report.items.push(replayed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dead::letter::tests::dead_letter;

    #[test]
    fn replay_keeps_the_task_headers_and_drops_the_dead_letter_ones() {
        let dead = dead_letter();
        let (subject, out, payload) = dead.replay_message(&Subjects::default());
        assert_eq!(subject, "jetq.task.emails.send_email");
        assert_eq!(payload, dead.payload);
        assert_eq!(
            out.get(headers::MSG_ID).unwrap().as_str(),
            "replay:12:task-1"
        );
        assert_eq!(
            out.get(headers::TRACEPARENT).unwrap().as_str(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(out.get(headers::MAX_ATTEMPTS).unwrap().as_str(), "5");
        assert_eq!(out.get("X-Custom").unwrap().as_str(), "kept");
        assert_ne!(
            out.get(headers::ENQUEUED_AT).unwrap().as_str(),
            "2025-12-31T23:59:00Z"
        );
        for name in DEAD_LETTER_HEADERS {
            assert!(out.get(name).is_none(), "{name} must be dropped");
        }
    }

    #[test]
    fn replay_goes_to_the_level_of_the_priority_header() {
        let subjects = Subjects::default();
        let mut dead = dead_letter();
        assert_eq!(dead.replay_priority(), (Priority::Normal, None));

        dead.raw_headers.insert(headers::PRIORITY, "high");
        let (subject, out, _) = dead.replay_message(&subjects);
        assert_eq!(subject, "jetq.task.emails~high.send_email");
        assert_eq!(out.get(headers::PRIORITY).unwrap().as_str(), "high");

        dead.raw_headers.insert(headers::PRIORITY, "low");
        assert_eq!(
            dead.replay_message(&subjects).0,
            "jetq.task.emails~low.send_email"
        );

        // Not a level: normal, without the header, and a warning naming the value.
        dead.raw_headers.insert(headers::PRIORITY, "urgent");
        let (level, warning) = dead.replay_priority();
        assert_eq!(level, Priority::Normal);
        let warning = warning.unwrap();
        assert!(warning.contains("\"urgent\""), "{warning}");
        let (subject, out, _) = dead.replay_message(&subjects);
        assert_eq!(subject, "jetq.task.emails.send_email");
        assert!(out.get(headers::PRIORITY).is_none());
    }
}
