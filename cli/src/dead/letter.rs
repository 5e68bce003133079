//! One dead letter as the CLI and dashboard read it from the dead-letter stream: its
//! dead-letter headers (read with the contract's `DeadLetterHeaders`), the task's own headers and
//! body, and the short form listings show.

use std::{collections::BTreeMap, time::SystemTime};

use async_nats::{jetstream::message::StreamMessage, HeaderMap};
use bytes::Bytes;
use jetq_contract::{headers, DeadLetterHeaders, FailureRecord, Subjects};
use serde::Serialize;

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
    /// in the dead letter ([`DeadLetter::payload_object`]); [`crate::Admin::dead_letter`] and the replay
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
    pub(super) fn body_len(&self) -> usize {
        match (&self.payload_object, self.payload_size) {
            (Some(_), Some(size)) if self.payload.is_empty() => {
                usize::try_from(size).unwrap_or(usize::MAX)
            }
            _ => self.payload.len(),
        }
    }

    /// Puts the body read from the dead-letter body store in place.
    pub(super) fn set_body(&mut self, body: Bytes) {
        (self.args, self.payload_text) = describe_payload(&body);
        self.payload = body;
    }

    pub(super) fn from_stream_message(
        subjects: &Subjects,
        message: StreamMessage,
    ) -> Option<DeadLetter> {
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
}

/// A body as JSON arguments, or else as text.
fn describe_payload(payload: &[u8]) -> (Option<serde_json::Value>, Option<String>) {
    match serde_json::from_slice(payload) {
        Ok(args) => (Some(args), None),
        Err(_) => (None, Some(String::from_utf8_lossy(payload).into_owned())),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use super::*;

    /// A dead letter of `emails.send_email` with every header, for the tests of the modules.
    pub(in crate::dead) fn dead_letter() -> DeadLetter {
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
}
