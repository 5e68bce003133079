//! The dead-letter headers (docs/PROTOCOL.md §5): what a worker adds to a task's own headers
//! when it moves the task to `<prefix>.dead.<queue>.<task>`, and how a reader parses them.
//!
//! One type, [`DeadLetterHeaders`], is both sides: a worker builds one with
//! [`DeadLetterHeaders::new`] and writes it with [`DeadLetterHeaders::write_to`]; the CLI, the
//! dashboard and tests read a stored letter with [`DeadLetterHeaders::read`]. Its fields are
//! named as §5 names the headers (`Jetq-Task-Id` is `task_id`, `Jetq-Dead-Reason` is `reason`,
//! …), and `docs/conformance/dead_letters.json` pins both directions for every language.
//!
//! Reading is lenient on purpose: a dead letter is evidence of a failure, so a reader shows
//! what it can. A header that is missing or does not parse (an attempt count that is not a
//! number, a failure record that is not JSON) reads as `None`; the letter itself is never
//! refused. A reason a newer writer invented is kept as written.
//!
//! Where the body goes when it does not fit beside these headers is [`crate::dead`].

use async_nats::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::{headers, DeadReason, FailureRecord};

/// The headers a worker adds to a dead letter, in the order §5 lists them. A worker copying a
/// task's headers into a letter, or a replay copying a letter's back into a task, leaves these
/// out (a replayed task that dies again gets fresh ones).
pub const DEAD_LETTER_HEADERS: [&str; 8] = [
    headers::TASK_ID,
    headers::DEAD_REASON,
    headers::ATTEMPTS,
    headers::DEAD_AT,
    headers::TASK_SEQUENCE,
    headers::FAILURE,
    headers::PAYLOAD_OBJECT,
    headers::PAYLOAD_SIZE,
];

/// The `Nats-Msg-Id` of the dead letter of the task at `task_sequence` with id `task_id`:
/// `dead:<task stream sequence>:<task id>`. The sequence makes it unique per task, so a worker
/// and the sweeper writing the same letter (or a worker resending after a lost ack) store one.
///
/// ```
/// assert_eq!(jetq_contract::dead_letter::dead_letter_id(7, "01JABC"), "dead:7:01JABC");
/// ```
pub fn dead_letter_id(task_sequence: u64, task_id: &str) -> String {
    format!("dead:{task_sequence}:{task_id}")
}

/// The dead-letter headers of PROTOCOL.md §5, as written and as read. Every field is optional
/// because a reader takes what it finds ([`DeadLetterHeaders::read`]); a worker's letter has
/// all of them but the two payload fields, which are set only when the body went to the
/// dead-letter body store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterHeaders {
    /// `Jetq-Task-Id`: the original task id (the task's `Nats-Msg-Id`).
    pub task_id: Option<String>,
    /// `Jetq-Dead-Reason`: why it died, as written (the known values are [`DeadReason`]'s).
    pub reason: Option<String>,
    /// `Jetq-Attempts`: the attempts the task had.
    pub attempts: Option<u32>,
    /// `Jetq-Dead-At`: when the letter was written, RFC 3339 UTC.
    pub dead_at: Option<String>,
    /// `Jetq-Task-Sequence`: the task's sequence in the task stream.
    pub task_sequence: Option<u64>,
    /// `Jetq-Failure`: the failure record (compact JSON on the wire).
    pub failure: Option<FailureRecord>,
    /// `Jetq-Payload-Object`: the object in `<PREFIX>_DEAD_PAYLOADS` holding the body, when the
    /// body did not fit in the letter (whose own body is then empty).
    pub payload_object: Option<String>,
    /// `Jetq-Payload-Size`: with `payload_object`, the body's size in bytes.
    pub payload_size: Option<u64>,
}

impl DeadLetterHeaders {
    /// The headers of the letter of the task at `task_sequence` with id `task_id`, from its
    /// failure record: the reason, attempts and time of death are the record's, so the headers
    /// and the record cannot disagree.
    pub fn new(task_id: &str, task_sequence: u64, failure: FailureRecord) -> Self {
        DeadLetterHeaders {
            task_id: Some(task_id.to_owned()),
            reason: Some(failure.reason.as_str().to_owned()),
            attempts: Some(failure.attempts),
            dead_at: Some(failure.dead_at.clone()),
            task_sequence: Some(task_sequence),
            failure: Some(failure),
            payload_object: None,
            payload_size: None,
        }
    }

    /// Reads the §5 headers of a stored dead letter. A header that is missing, or whose value
    /// does not parse (numbers are read with surrounding spaces trimmed; the failure record must
    /// be a JSON failure record), is `None`. Never fails: see the module documentation.
    pub fn read(map: &HeaderMap) -> Self {
        let text = |name: &str| map.get(name).map(|value| value.as_str().to_owned());
        let number = |name: &str| text(name).and_then(|value| value.trim().parse().ok());
        DeadLetterHeaders {
            task_id: text(headers::TASK_ID),
            reason: text(headers::DEAD_REASON),
            attempts: text(headers::ATTEMPTS).and_then(|value| value.trim().parse().ok()),
            dead_at: text(headers::DEAD_AT),
            task_sequence: number(headers::TASK_SEQUENCE),
            failure: text(headers::FAILURE).and_then(|json| serde_json::from_str(&json).ok()),
            payload_object: text(headers::PAYLOAD_OBJECT),
            payload_size: number(headers::PAYLOAD_SIZE),
        }
    }

    /// Writes the fields that are set into `map`, replacing any value of the same header, and
    /// the letter's own `Nats-Msg-Id` ([`dead_letter_id`]) when the task sequence is set. Call
    /// it again after changing a field (moving the body out, cutting the failure record): each
    /// write replaces the previous one.
    pub fn write_to(&self, map: &mut HeaderMap) {
        if let Some(sequence) = self.task_sequence {
            let id = dead_letter_id(sequence, self.task_id.as_deref().unwrap_or_default());
            map.insert(headers::MSG_ID, id.as_str());
        }
        if let Some(task_id) = &self.task_id {
            map.insert(headers::TASK_ID, task_id.as_str());
        }
        if let Some(reason) = &self.reason {
            map.insert(headers::DEAD_REASON, reason.as_str());
        }
        if let Some(attempts) = self.attempts {
            map.insert(headers::ATTEMPTS, attempts.to_string().as_str());
        }
        if let Some(dead_at) = &self.dead_at {
            map.insert(headers::DEAD_AT, dead_at.as_str());
        }
        if let Some(sequence) = self.task_sequence {
            map.insert(headers::TASK_SEQUENCE, sequence.to_string().as_str());
        }
        if let Some(failure) = &self.failure {
            map.insert(headers::FAILURE, failure_json(failure).as_str());
        }
        if let Some(object) = &self.payload_object {
            map.insert(headers::PAYLOAD_OBJECT, object.as_str());
        }
        if let Some(size) = self.payload_size {
            map.insert(headers::PAYLOAD_SIZE, size.to_string().as_str());
        }
    }

    /// The reason as a [`DeadReason`], when it is one this version knows.
    pub fn dead_reason(&self) -> Option<DeadReason> {
        let reason = self.reason.as_deref()?;
        serde_json::from_value(serde_json::Value::String(reason.to_owned())).ok()
    }
}

/// A copy of `map` without the dead-letter headers ([`DEAD_LETTER_HEADERS`]): the task's own
/// headers, as a worker copies them into a new letter (a replayed task that dies again must not
/// inherit its previous letter's body-store headers). The atomic-batch headers a task stored
/// in an atomic batch keeps (`Nats-Batch-Id`, `Nats-Batch-Sequence`, `Nats-Batch-Commit`) are
/// left out too: copied onto the letter, they would make its publish a batch publish, which the
/// dead-letter stream refuses (10174).
pub fn without_dead_letter_headers(map: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, values) in map.iter() {
        let name: &str = name.as_ref();
        if DEAD_LETTER_HEADERS.contains(&name) || name.starts_with("Nats-Batch-") {
            continue;
        }
        for value in values {
            out.append(name, value.as_str());
        }
    }
    out
}

/// The failure record as the compact single-line JSON of `Jetq-Failure`.
fn failure_json(failure: &FailureRecord) -> String {
    // A FailureRecord has only strings, numbers and lists: encoding cannot fail.
    serde_json::to_string(failure).unwrap_or_else(|_| "{}".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AttemptFailure, AttemptOutcome};

    fn record() -> FailureRecord {
        FailureRecord {
            reason: DeadReason::Exhausted,
            attempts: 3,
            error: "smtp refused".into(),
            history: vec![AttemptFailure {
                attempt: 1,
                outcome: AttemptOutcome::Error,
                error: "smtp refused".into(),
                at: "2026-11-27T07:00:01.000000Z".into(),
            }],
            enqueued_at: Some("2026-11-27T07:00:00.000000Z".into()),
            dead_at: "2026-11-27T07:00:09.000000Z".into(),
            http: None,
        }
    }

    #[test]
    fn what_is_written_reads_back_the_same() {
        let mut headers = DeadLetterHeaders::new("01JABC", 42, record());
        headers.payload_object = Some("42-3031".into());
        headers.payload_size = Some(1_048_000);
        let mut map = HeaderMap::new();
        headers.write_to(&mut map);
        assert_eq!(DeadLetterHeaders::read(&map), headers);
        assert_eq!(
            map.get(headers::MSG_ID).map(|v| v.as_str()),
            Some("dead:42:01JABC")
        );
        assert_eq!(headers.dead_reason(), Some(DeadReason::Exhausted));
    }

    #[test]
    fn a_second_write_replaces_the_first() {
        let mut headers = DeadLetterHeaders::new("t", 1, record());
        let mut map = HeaderMap::new();
        headers.write_to(&mut map);
        if let Some(failure) = &mut headers.failure {
            failure.history.clear();
        }
        headers.write_to(&mut map);
        let read = DeadLetterHeaders::read(&map);
        assert_eq!(read.failure.map(|f| f.history.len()), Some(0));
        assert_eq!(map.get_all(headers::FAILURE).count(), 1);
    }

    #[test]
    fn the_task_headers_are_kept_and_the_dead_letter_ones_dropped() {
        let mut map = HeaderMap::new();
        DeadLetterHeaders::new("t", 1, record()).write_to(&mut map);
        map.insert(headers::PAYLOAD_OBJECT, "1-74");
        map.insert(headers::TRACEPARENT, "00-abc-def-01");
        let kept = without_dead_letter_headers(&map);
        assert_eq!(
            kept.get(headers::TRACEPARENT).map(|v| v.as_str()),
            Some("00-abc-def-01")
        );
        for name in DEAD_LETTER_HEADERS {
            assert!(kept.get(name).is_none(), "{name} kept");
        }
        // The letter's own id is not a dead-letter header: the writer replaces it.
        assert!(kept.get(headers::MSG_ID).is_some());
    }
}
