//! Reading dead letters: a snapshot scan of the dead-letter stream with a filter ([`DeadScan`]),
//! listings with a total ([`DeadPage`]), one letter by sequence or by task id, and the body of a
//! letter kept in the dead-letter body store.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{
    consumer::{pull, DeliverPolicy},
    stream::LastRawMessageErrorKind,
    ErrorCode,
};
use bytes::Bytes;
use futures::StreamExt;
use jetq_contract::Subjects;
use serde::Serialize;

use super::{to_datetime, Cutoffs, DeadFilter, DeadLetter, Selection};
use crate::{admin::Admin, error::AdminError};

/// A page of a dead-letter listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadPage {
    /// How many dead letters match the filter in all.
    pub total: u64,
    /// The first `limit` of them, oldest first.
    pub dead_letters: Vec<DeadLetter>,
}

/// A page of a listing read from a start sequence ([`Admin::dead_letters_after`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadSlice {
    /// The letters, oldest first.
    pub dead_letters: Vec<DeadLetter>,
    /// True if more letters match after the last one.
    pub more: bool,
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
    /// True when the scan reads each subject from its first letter on (no start sequence, no
    /// `newer_than`): every letter of a subject below the last one read was seen.
    from_start: bool,
    /// Per dead-letter subject, the first letter read that did not match the filter.
    unmatched: std::collections::HashMap<String, u64>,
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

    /// True if every letter stored on dead-letter `subject` below the last one read matched
    /// the filter (and was returned): the scan started at the subject's first letter and
    /// skipped none of it. A purge of the subject up to that sequence then deletes exactly
    /// letters this scan returned.
    pub(crate) fn all_matched_so_far(&self, subject: &str) -> bool {
        self.from_start && !self.unmatched.contains_key(subject)
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
            self.unmatched
                .entry(message.subject.to_string())
                .or_insert(sequence);
        }
    }
}

impl Admin {
    /// Starts reading the dead letters that match `filter`, oldest first.
    pub async fn scan_dead(&self, filter: &DeadFilter) -> Result<DeadScan, AdminError> {
        self.scan_dead_from(filter, None).await
    }

    /// Starts reading the dead letters that match `filter`, oldest first, from stream sequence
    /// `start` on (`None`: from the first): the server starts the read there, so a page deep in
    /// a long listing costs no more than the first.
    pub async fn scan_dead_from(
        &self,
        filter: &DeadFilter,
        start: Option<u64>,
    ) -> Result<DeadScan, AdminError> {
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
            from_start: false,
            unmatched: std::collections::HashMap::new(),
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
        let deliver_policy = match (start, cutoffs.newer) {
            // A start sequence wins; the age cut-off is still applied to each letter read.
            (Some(start_sequence), _) => DeliverPolicy::ByStartSequence {
                start_sequence: start_sequence.max(1),
            },
            (None, Some(after)) => DeliverPolicy::ByStartTime {
                start_time: to_datetime(after)?,
            },
            (None, None) => DeliverPolicy::All,
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
            from_start: start.is_none() && cutoffs.newer.is_none(),
            unmatched: std::collections::HashMap::new(),
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

    /// One page of the dead letters matching `filter`, oldest first: up to `limit` letters
    /// stored after sequence `after` (`None`: from the first). The read starts at `after + 1`
    /// on the server and stops after `limit + 1` matches (the extra one only says whether a
    /// next page exists), so its cost does not grow with the page number or the stream's size
    /// (with a filter the server cannot apply, reason or task id, the letters in between that
    /// do not match are read and skipped).
    pub async fn dead_letters_after(
        &self,
        filter: &DeadFilter,
        after: Option<u64>,
        limit: usize,
    ) -> Result<DeadSlice, AdminError> {
        let mut scan = self
            .scan_dead_from(filter, after.map(|a| a.saturating_add(1)))
            .await?;
        let mut slice = DeadSlice {
            dead_letters: Vec::new(),
            more: false,
        };
        while let Some(dead) = scan.next().await? {
            if slice.dead_letters.len() == limit {
                slice.more = true;
                break;
            }
            slice.dead_letters.push(dead);
        }
        Ok(slice)
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

    pub(super) async fn select(&self, selection: &Selection) -> Result<Source, AdminError> {
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
}

pub(super) enum Source {
    List(std::vec::IntoIter<DeadLetter>),
    Scan(Box<DeadScan>, u64, Option<String>),
}

impl Source {
    /// See [`DeadScan::all_matched_so_far`]; false for a list of sequences.
    pub(super) fn all_matched_so_far(&self, subject: &str) -> bool {
        match self {
            Source::List(_) => false,
            Source::Scan(scan, _, _) => scan.all_matched_so_far(subject),
        }
    }

    pub(super) fn estimate(&self) -> u64 {
        match self {
            Source::List(list) => list.len() as u64,
            Source::Scan(scan, _, _) => scan.estimate(),
        }
    }

    pub(super) async fn next(&mut self) -> Result<Option<DeadLetter>, AdminError> {
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
