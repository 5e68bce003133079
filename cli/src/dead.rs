//! Dead letters: list and show with filters, replay (re-enqueue, then remove), purge.
//!
//! ## Replay
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
//! The dead letter is deleted only **after** the task stream acknowledged the publish. A crash
//! between the two leaves the dead letter in place; replaying it again is deduplicated by the
//! server within the duplicate window (2 minutes by default) and, after it, stores a second copy.
//! So a crash yields a duplicate at worst, never a loss.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use async_nats::{
    jetstream::{
        self,
        consumer::{pull, DeliverPolicy},
        context::{PublishAckFuture, PublishError},
        message::StreamMessage,
        response::Response,
        stream::{LastRawMessageErrorKind, Stream},
        ErrorCode,
    },
    HeaderMap,
};
use bytes::Bytes;
use futures::{stream::FuturesUnordered, StreamExt};
use jetq_contract::{
    dead::headers_wire_len,
    headers,
    publish::{self, Outgoing, Publisher},
    DeadLetterHeaders, FailureRecord, NameKind, Subjects,
};
use serde::Serialize;

use crate::{admin::Admin, error::AdminError};

/// A prepared replay and the result of its first send.
type FirstSend = (Outgoing, Result<PublishAckFuture, PublishError>);

/// Headers a worker adds when it dead-letters a task; a replay drops them (the contract's
/// list, re-exported here for the CLI's users).
pub use jetq_contract::dead_letter::DEAD_LETTER_HEADERS;

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

/// One dead letter as stored in the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// Its sequence in the dead-letter stream: what `show`, `replay` and `purge` take.
    pub sequence: u64,
    /// The task's queue.
    pub queue: String,
    /// The task's wire name.
    pub task: String,
    /// The original task id (`Jetq-Task-Id`).
    pub task_id: Option<String>,
    /// Why it died (`Jetq-Dead-Reason`).
    pub reason: Option<String>,
    /// Deliveries it had (`Jetq-Attempts`).
    pub attempts: Option<u32>,
    /// The final error, from the failure record.
    pub error: Option<String>,
    /// When it was dead-lettered, RFC 3339 UTC (the server's timestamp of the dead letter).
    pub dead_at: String,
    /// When the task was first enqueued (`Jetq-Enqueued-At`), if known.
    pub enqueued_at: Option<String>,
    /// The task's sequence in the task stream (`Jetq-Task-Sequence`).
    pub task_sequence: Option<u64>,
    /// The failure record (`Jetq-Failure`), with the error of each attempt.
    pub failure: Option<FailureRecord>,
    /// Every header, as stored.
    pub headers: BTreeMap<String, Vec<String>>,
    /// The task's arguments, when the payload is JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<serde_json::Value>,
    /// The payload as text (invalid UTF-8 replaced), when it is not JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_text: Option<String>,
    /// The payload, byte for byte. Empty in the stream when the body was too large to travel
    /// in the dead letter ([`DeadLetter::payload_object`]); [`Admin::dead_letter`] and the replay
    /// read it from the object store.
    #[serde(skip)]
    pub payload: Bytes,
    /// The object in the dead-letter body store that holds the task's body
    /// (`Jetq-Payload-Object`), when it did not fit in the dead letter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_object: Option<String>,
    /// The body's size in bytes (`Jetq-Payload-Size`), with [`DeadLetter::payload_object`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_size: Option<u64>,
    /// The original headers, for a faithful replay.
    #[serde(skip)]
    pub raw_headers: HeaderMap,
    /// When the dead letter was stored.
    #[serde(skip)]
    pub stored: SystemTime,
}

/// The short form of a dead letter, for listings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadSummary {
    /// Sequence in the dead-letter stream.
    pub sequence: u64,
    /// Queue.
    pub queue: String,
    /// Task wire name.
    pub task: String,
    /// Original task id.
    pub task_id: Option<String>,
    /// Why it died.
    pub reason: Option<String>,
    /// Deliveries it had.
    pub attempts: Option<u32>,
    /// The final error.
    pub error: Option<String>,
    /// When it was dead-lettered.
    pub dead_at: String,
}

impl DeadLetter {
    /// Reads a dead letter from its stored parts; `None` if the subject is not a dead-letter
    /// subject of this installation.
    pub(crate) fn from_parts(
        subjects: &Subjects,
        sequence: u64,
        subject: &str,
        raw_headers: HeaderMap,
        payload: Bytes,
        stored: SystemTime,
    ) -> Option<DeadLetter> {
        let (queue, task) = subjects.parse_dead(subject)?;
        let dead = DeadLetterHeaders::read(&raw_headers);
        let mut all = BTreeMap::new();
        for (name, values) in raw_headers.iter() {
            all.insert(
                name.to_string(),
                values.iter().map(|v| v.as_str().to_owned()).collect(),
            );
        }
        let (args, payload_text) = match dead.payload_object {
            // The body is elsewhere: nothing to show until it is read.
            Some(_) => (None, None),
            None => describe_payload(&payload),
        };
        Some(DeadLetter {
            sequence,
            queue: queue.to_owned(),
            task: task.to_owned(),
            task_id: dead.task_id,
            reason: dead.reason,
            attempts: dead.attempts,
            error: dead.failure.as_ref().map(|f| f.error.clone()),
            dead_at: jetq_contract::time::format(stored),
            enqueued_at: raw_headers
                .get(headers::ENQUEUED_AT)
                .map(|v| v.as_str().to_owned()),
            task_sequence: dead.task_sequence,
            failure: dead.failure,
            headers: all,
            args,
            payload_text,
            payload,
            payload_size: dead.payload_size,
            payload_object: dead.payload_object,
            raw_headers,
            stored,
        })
    }

    /// The body's length, wherever the body is.
    fn body_len(&self) -> usize {
        match (&self.payload_object, self.payload_size) {
            (Some(_), Some(size)) if self.payload.is_empty() => {
                usize::try_from(size).unwrap_or(usize::MAX)
            }
            _ => self.payload.len(),
        }
    }

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

    /// Puts the body read from the dead-letter body store in place.
    fn set_body(&mut self, body: Bytes) {
        (self.args, self.payload_text) = describe_payload(&body);
        self.payload = body;
    }

    fn from_stream_message(subjects: &Subjects, message: StreamMessage) -> Option<DeadLetter> {
        DeadLetter::from_parts(
            subjects,
            message.sequence,
            message.subject.as_str(),
            message.headers,
            message.payload,
            SystemTime::from(message.time),
        )
    }

    /// The listing form.
    pub fn summary(&self) -> DeadSummary {
        DeadSummary {
            sequence: self.sequence,
            queue: self.queue.clone(),
            task: self.task.clone(),
            task_id: self.task_id.clone(),
            reason: self.reason.clone(),
            attempts: self.attempts,
            error: self.error.clone(),
            dead_at: self.dead_at.clone(),
        }
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

    /// The subject, headers and payload its replay publishes.
    pub fn replay_message(&self, subjects: &Subjects) -> (String, HeaderMap, Bytes) {
        let mut out = HeaderMap::new();
        for (name, values) in self.raw_headers.iter() {
            let name: &str = name.as_ref();
            if name.starts_with("Nats-")
                || name == headers::ENQUEUED_AT
                || DEAD_LETTER_HEADERS.contains(&name)
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
            subjects.task(&self.queue, &self.task),
            out,
            self.payload.clone(),
        )
    }
}

/// A body as JSON arguments, or else as text.
fn describe_payload(payload: &[u8]) -> (Option<serde_json::Value>, Option<String>) {
    match serde_json::from_slice(payload) {
        Ok(args) => (Some(args), None),
        Err(_) => (None, Some(String::from_utf8_lossy(payload).into_owned())),
    }
}

/// Which dead letters: every field set must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeadFilter {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this task type.
    pub task: Option<String>,
    /// Only dead letters stored at least this long ago.
    pub older_than: Option<Duration>,
    /// Only dead letters stored at most this long ago.
    pub newer_than: Option<Duration>,
    /// Only this dead reason (`exhausted`, `fatal`, `undecodable`, `unknown-task`,
    /// `deliveries-exhausted`).
    pub reason: Option<String>,
    /// Only dead letters of this task id (`Jetq-Task-Id`).
    pub task_id: Option<String>,
}

impl DeadFilter {
    /// True if no field is set: every dead letter matches.
    pub fn is_everything(&self) -> bool {
        self == &DeadFilter::default()
    }

    /// Checks the names in the filter.
    pub fn validate(&self) -> Result<(), AdminError> {
        if let Some(queue) = &self.queue {
            jetq_contract::name::validate(NameKind::Queue, queue)?;
        }
        if let Some(task) = &self.task {
            jetq_contract::name::validate(NameKind::Task, task)?;
        }
        if let (Some(older), Some(newer)) = (self.older_than, self.newer_than) {
            if older >= newer {
                return Err(AdminError::Invalid(format!(
                    "--older-than {} and --newer-than {} select nothing: the first must be \
                     shorter than the second",
                    humantime::format_duration(older),
                    humantime::format_duration(newer)
                )));
            }
        }
        Ok(())
    }

    /// The subject filter on the dead-letter stream.
    pub fn subject(&self, subjects: &Subjects) -> String {
        subjects.dead(
            self.queue.as_deref().unwrap_or("*"),
            self.task.as_deref().unwrap_or("*"),
        )
    }

    fn matches(&self, dead: &DeadLetter, cutoffs: &Cutoffs) -> bool {
        if let Some(before) = cutoffs.older {
            if dead.stored > before {
                return false;
            }
        }
        if let Some(after) = cutoffs.newer {
            if dead.stored < after {
                return false;
            }
        }
        if let Some(reason) = &self.reason {
            if dead.reason.as_deref() != Some(reason.as_str()) {
                return false;
            }
        }
        if let Some(id) = &self.task_id {
            if dead.task_id.as_deref() != Some(id.as_str()) {
                return false;
            }
        }
        true
    }
}

#[derive(Debug, Clone, Copy)]
struct Cutoffs {
    older: Option<SystemTime>,
    newer: Option<SystemTime>,
}

/// What a replay or purge acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// These dead letters, by sequence. Every one must exist.
    Sequences(Vec<u64>),
    /// Every dead letter matching the filter (an empty filter: all of them).
    Filter(DeadFilter),
}

/// A page of a dead-letter listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadPage {
    /// How many dead letters match the filter in all.
    pub total: u64,
    /// The first `limit` of them, oldest first.
    pub dead_letters: Vec<DeadLetter>,
}

/// Receives progress of long operations (the CLI draws a progress bar with it).
pub trait Progress: Send + Sync {
    /// The number of items expected (an upper bound when filters apply).
    fn set_total(&self, _total: u64) {}
    /// `n` more items are done.
    fn inc(&self, _n: u64) {}
}

impl Progress for () {}

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

/// A dead letter whose replay or deletion failed; it stays in the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemFailure {
    /// The dead letter's sequence.
    pub dead_sequence: u64,
    /// What went wrong.
    pub error: String,
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

/// Reads the dead letters matching a filter, oldest first, from a snapshot: dead letters
/// written after the scan started are not returned.
pub struct DeadScan {
    subjects: Subjects,
    filter: DeadFilter,
    cutoffs: Cutoffs,
    messages: Option<pull::Ordered>,
    last_sequence: u64,
    estimate: u64,
    idle: Duration,
    done: bool,
}

impl std::fmt::Debug for DeadScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadScan")
            .field("filter", &self.filter)
            .field("estimate", &self.estimate)
            .finish()
    }
}

impl DeadScan {
    /// How many dead letters the scan will read at most.
    pub fn estimate(&self) -> u64 {
        self.estimate
    }

    /// The next matching dead letter, `None` at the end.
    pub async fn next(&mut self) -> Result<Option<DeadLetter>, AdminError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let Some(messages) = self.messages.as_mut() else {
                self.done = true;
                return Ok(None);
            };
            let message = match tokio::time::timeout(self.idle, messages.next()).await {
                Err(_) => {
                    return Err(AdminError::nats(
                        "reading dead letters stalled",
                        format!("no message within {:?}", self.idle),
                    ))
                }
                Ok(None) => {
                    self.done = true;
                    return Ok(None);
                }
                Ok(Some(Err(err))) => {
                    return Err(AdminError::nats("cannot read dead letters", err));
                }
                Ok(Some(Ok(message))) => message,
            };
            let (sequence, pending, published) = match message.info() {
                Ok(info) => (info.stream_sequence, info.pending, info.published),
                Err(err) => {
                    return Err(AdminError::nats(
                        "cannot read a dead letter's metadata",
                        err.to_string(),
                    ))
                }
            };
            if sequence > self.last_sequence {
                self.done = true;
                return Ok(None);
            }
            if pending == 0 || sequence == self.last_sequence {
                self.done = true;
            }
            let stored = SystemTime::from(published);
            if let Some(before) = self.cutoffs.older {
                if stored > before {
                    // Stored in sequence order: everything after is newer still.
                    self.done = true;
                    return Ok(None);
                }
            }
            let message = message.message;
            let Some(dead) = DeadLetter::from_parts(
                &self.subjects,
                sequence,
                message.subject.as_str(),
                message.headers.unwrap_or_default(),
                message.payload,
                stored,
            ) else {
                continue;
            };
            if self.filter.matches(&dead, &self.cutoffs) {
                return Ok(Some(dead));
            }
        }
    }
}

impl Admin {
    /// Starts reading the dead letters that match `filter`, oldest first.
    pub async fn scan_dead(&self, filter: &DeadFilter) -> Result<DeadScan, AdminError> {
        filter.validate()?;
        let subjects = self.subjects().clone();
        let now = SystemTime::now();
        let cutoffs = Cutoffs {
            older: filter.older_than.and_then(|d| now.checked_sub(d)),
            newer: filter
                .newer_than
                .map(|d| now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH)),
        };
        let idle = self.request_timeout().max(Duration::from_secs(5)) * 2;
        let empty = |filter: &DeadFilter| DeadScan {
            subjects: subjects.clone(),
            filter: filter.clone(),
            cutoffs,
            messages: None,
            last_sequence: 0,
            estimate: 0,
            idle,
            done: true,
        };
        let Some(mut stream) = self.dead_stream().await? else {
            return Ok(empty(filter));
        };
        let last_sequence = stream
            .info()
            .await
            .map_err(|err| AdminError::nats("cannot read the dead-letter stream", err))?
            .state
            .last_sequence;
        let deliver_policy = match cutoffs.newer {
            Some(after) => DeliverPolicy::ByStartTime {
                start_time: to_datetime(after)?,
            },
            None => DeliverPolicy::All,
        };
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: filter.subject(&subjects),
                deliver_policy,
                description: Some("jetq CLI: reading dead letters".into()),
                ..Default::default()
            })
            .await
            .map_err(|err| AdminError::nats("cannot read the dead-letter stream", err))?;
        let estimate = consumer.cached_info().num_pending;
        if estimate == 0 || last_sequence == 0 {
            return Ok(empty(filter));
        }
        let messages = consumer
            .messages()
            .await
            .map_err(|err| AdminError::nats("cannot read the dead-letter stream", err))?;
        Ok(DeadScan {
            subjects,
            filter: filter.clone(),
            cutoffs,
            messages: Some(messages),
            last_sequence,
            estimate,
            idle,
            done: false,
        })
    }

    /// The dead letters matching `filter`, oldest first: the first `limit` (all with `None`)
    /// and the total count.
    ///
    /// When the server can count the matches itself (filters of queue, task and `newer_than`
    /// only), reading stops after `limit` dead letters and the total is the server's count when
    /// the listing started; otherwise every dead letter is read to count them.
    pub async fn dead_letters(
        &self,
        filter: &DeadFilter,
        limit: Option<usize>,
    ) -> Result<DeadPage, AdminError> {
        let counted_by_server =
            filter.older_than.is_none() && filter.reason.is_none() && filter.task_id.is_none();
        let mut scan = self.scan_dead(filter).await?;
        let mut page = DeadPage {
            total: 0,
            dead_letters: Vec::new(),
        };
        while let Some(dead) = scan.next().await? {
            page.total += 1;
            if limit.is_none_or(|limit| page.dead_letters.len() < limit) {
                page.dead_letters.push(dead);
            } else if counted_by_server {
                page.total = page.total.max(scan.estimate());
                break;
            }
        }
        Ok(page)
    }

    /// One dead letter by its sequence in the dead-letter stream.
    pub async fn dead_letter(&self, sequence: u64) -> Result<DeadLetter, AdminError> {
        let stream = self.required_dead_stream().await?;
        let not_found = || {
            AdminError::not_found(
                format!("dead letter {sequence}"),
                Some(
                    "it was replayed, purged or expired, or never existed; `jetq dead list` shows \
                     the dead letters"
                        .into(),
                ),
            )
        };
        let message = match stream.get_raw_message(sequence).await {
            Ok(message) => message,
            Err(err) => {
                return Err(match err.kind() {
                    LastRawMessageErrorKind::NoMessageFound => not_found(),
                    LastRawMessageErrorKind::JetStream(js)
                        if js.error_code() == ErrorCode::NO_MESSAGE_FOUND
                            || js.error_code() == ErrorCode::SEQUENCE_NOT_FOUND =>
                    {
                        not_found()
                    }
                    _ => AdminError::nats(format!("cannot read dead letter {sequence}"), err),
                })
            }
        };
        let mut dead =
            DeadLetter::from_stream_message(self.subjects(), message).ok_or_else(not_found)?;
        if let Some(object) = dead.payload_object.clone() {
            dead.set_body(self.dead_payload(&object).await?);
        }
        Ok(dead)
    }

    /// The body of a dead letter that did not fit in it, from the dead-letter body store.
    pub async fn dead_payload(&self, object: &str) -> Result<Bytes, AdminError> {
        use tokio::io::AsyncReadExt;
        let bucket = self.subjects().dead_payloads_bucket();
        let store = self
            .jetstream()
            .get_object_store(&bucket)
            .await
            .map_err(|err| AdminError::nats(format!("cannot open object store {bucket}"), err))?;
        let mut reader = store.get(object).await.map_err(|err| {
            AdminError::nats(
                format!("cannot read dead-letter body {object} from {bucket}"),
                err,
            )
        })?;
        let mut body = Vec::new();
        reader.read_to_end(&mut body).await.map_err(|err| {
            AdminError::nats(
                format!("cannot read dead-letter body {object} from {bucket}"),
                err,
            )
        })?;
        Ok(Bytes::from(body))
    }

    /// Deletes a dead letter's body object once the letter is gone. Best effort: a body left
    /// behind expires with the store (`JETQ_DEAD_MAX_AGE`).
    async fn forget_dead_payload(&self, dead: &DeadLetter) {
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

    /// The dead letters of a task id (a task enqueued twice with one key can die twice).
    pub async fn dead_letters_of_task(&self, task_id: &str) -> Result<Vec<DeadLetter>, AdminError> {
        let filter = DeadFilter {
            task_id: Some(task_id.to_owned()),
            ..DeadFilter::default()
        };
        let found = self.dead_letters(&filter, None).await?.dead_letters;
        if found.is_empty() {
            return Err(AdminError::not_found(
                format!("dead letter of task {task_id}"),
                Some("no dead letter carries this Jetq-Task-Id".into()),
            ));
        }
        Ok(found)
    }

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
        while let Some(dead) = source.next().await? {
            report.matched += 1;
            if options.dry_run {
                let (_, headers, _) = dead.replay_message(self.subjects());
                report.items.push(Replayed {
                    dead_sequence: dead.sequence,
                    queue: dead.queue.clone(),
                    task: dead.task.clone(),
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
                    record(&mut report, outcome, progress);
                }
            }
            // Sent in order here; acks and deletions complete concurrently.
            let first = self.send_replay(&dead).await;
            in_flight.push(self.finish_replay(&dead_stream, &tasks_name, dead, first));
        }
        while let Some(outcome) = in_flight.next().await {
            record(&mut report, outcome, progress);
        }
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

    /// The second half of a replay: deletes dead letter `sequence`. `Ok(false)` if it was
    /// already gone.
    pub async fn remove_dead_letter(&self, sequence: u64) -> Result<bool, AdminError> {
        let stream = self.required_dead_stream().await?;
        delete_dead(self.jetstream(), &stream_name(&stream), sequence).await
    }

    /// How many dead letters `selection` stands for now: what a replay or purge would act on,
    /// counted before asking the operator to confirm. Sequences must each exist (as for
    /// [`Admin::replay`] and [`Admin::purge`]); a filter is counted by the server where it can.
    pub async fn count_selected(&self, selection: &Selection) -> Result<u64, AdminError> {
        match selection {
            Selection::Sequences(sequences) => {
                let unique: std::collections::BTreeSet<u64> = sequences.iter().copied().collect();
                for sequence in &unique {
                    self.dead_letter(*sequence).await?;
                }
                Ok(unique.len() as u64)
            }
            Selection::Filter(filter) => Ok(self.dead_letters(filter, Some(0)).await?.total),
        }
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

    async fn select(&self, selection: &Selection) -> Result<Source, AdminError> {
        match selection {
            Selection::Sequences(sequences) => {
                let mut found = Vec::with_capacity(sequences.len());
                let mut seen = std::collections::HashSet::new();
                for sequence in sequences {
                    if seen.insert(*sequence) {
                        found.push(self.dead_letter(*sequence).await?);
                    }
                }
                Ok(Source::List(found.into_iter()))
            }
            Selection::Filter(filter) => {
                let scan = self.scan_dead(filter).await?;
                Ok(Source::Scan(Box::new(scan), 0, filter.task_id.clone()))
            }
        }
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
        Ok(Replayed {
            dead_sequence: dead.sequence,
            queue: dead.queue.clone(),
            task: dead.task.clone(),
            task_id: dead.task_id.clone(),
            new_id: message.id,
            task_sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    async fn finish_replay(
        &self,
        dead_stream: &Stream,
        tasks_name: &str,
        dead: DeadLetter,
        first: Result<FirstSend, AdminError>,
    ) -> (u64, Result<Replayed, AdminError>) {
        let sequence = dead.sequence;
        let replayed = match self.await_replay_ack(tasks_name, &dead, first).await {
            Ok(replayed) => replayed,
            Err(err) => return (sequence, Err(err)),
        };
        // Only now, with the replay stored, may the dead letter go.
        match delete_dead(self.jetstream(), &stream_name(dead_stream), sequence).await {
            Ok(_) => {
                self.forget_dead_payload(&dead).await;
                (sequence, Ok(replayed))
            }
            Err(err) => (
                sequence,
                Err(AdminError::nats(
                    format!(
                        "replayed as task {} but the dead letter could not be removed (replaying \
                         it again is deduplicated within the duplicate window)",
                        replayed.new_id
                    ),
                    err,
                )),
            ),
        }
    }
}

enum Source {
    List(std::vec::IntoIter<DeadLetter>),
    Scan(Box<DeadScan>, u64, Option<String>),
}

impl Source {
    fn estimate(&self) -> u64 {
        match self {
            Source::List(list) => list.len() as u64,
            Source::Scan(scan, _, _) => scan.estimate(),
        }
    }

    async fn next(&mut self) -> Result<Option<DeadLetter>, AdminError> {
        match self {
            Source::List(list) => Ok(list.next()),
            Source::Scan(scan, found, task_id) => {
                let next = scan.next().await?;
                match (&next, task_id) {
                    (Some(_), _) => *found += 1,
                    (None, Some(id)) if *found == 0 => {
                        return Err(AdminError::not_found(
                            format!("dead letter of task {id}"),
                            Some("no dead letter carries this Jetq-Task-Id".into()),
                        ))
                    }
                    _ => {}
                }
                Ok(next)
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
async fn delete_dead(
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

fn stream_name(stream: &Stream) -> String {
    stream.cached_info().config.name.clone()
}

/// A system time as the client's datetime type.
pub(crate) fn to_datetime(at: SystemTime) -> Result<async_nats::datetime::DateTime, AdminError> {
    let nanos = match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    };
    async_nats::datetime::from_nanos(nanos)
        .map_err(|err| AdminError::Invalid(format!("time out of range: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_letter() -> DeadLetter {
        let mut raw = HeaderMap::new();
        raw.insert(headers::MSG_ID, "dead:7:task-1");
        raw.insert(headers::TASK_ID, "task-1");
        raw.insert(headers::DEAD_REASON, "exhausted");
        raw.insert(headers::ATTEMPTS, "3");
        raw.insert(headers::DEAD_AT, "2026-01-01T00:00:00Z");
        raw.insert(headers::TASK_SEQUENCE, "7");
        raw.insert(
            headers::FAILURE,
            r#"{"reason":"exhausted","attempts":3,"error":"smtp refused","history":[],"enqueued_at":null,"dead_at":"2026-01-01T00:00:00Z"}"#,
        );
        raw.insert(headers::ENQUEUED_AT, "2025-12-31T23:59:00Z");
        raw.insert(
            headers::TRACEPARENT,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        raw.insert(headers::MAX_ATTEMPTS, "5");
        raw.insert("X-Custom", "kept");
        DeadLetter::from_parts(
            &Subjects::default(),
            12,
            "jetq.dead.emails.send_email",
            raw,
            Bytes::from_static(br#"{"to":"a@example.com"}"#),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000),
        )
        .unwrap()
    }

    #[test]
    fn parses_the_dead_letter_headers() {
        let dead = dead_letter();
        assert_eq!(dead.queue, "emails");
        assert_eq!(dead.task, "send_email");
        assert_eq!(dead.task_id.as_deref(), Some("task-1"));
        assert_eq!(dead.attempts, Some(3));
        assert_eq!(dead.task_sequence, Some(7));
        assert_eq!(dead.error.as_deref(), Some("smtp refused"));
        assert_eq!(dead.args, Some(serde_json::json!({"to": "a@example.com"})));
        assert!(dead.payload_text.is_none());
    }

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
    fn filters_validate_names_and_ages() {
        let bad = DeadFilter {
            queue: Some("a.b".into()),
            ..DeadFilter::default()
        };
        assert!(bad.validate().is_err());
        let empty_window = DeadFilter {
            older_than: Some(Duration::from_secs(60)),
            newer_than: Some(Duration::from_secs(10)),
            ..DeadFilter::default()
        };
        assert!(empty_window.validate().is_err());
        let subject = DeadFilter {
            task: Some("t".into()),
            ..DeadFilter::default()
        }
        .subject(&Subjects::default());
        assert_eq!(subject, "jetq.dead.*.t");
    }
}
