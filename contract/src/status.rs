//! Task status records: what a tracked task is doing, kept in a JetStream KV bucket.
//!
//! Status is opt-in per task type ([`crate::TaskOptions::track_status`]) or per task (the
//! [`TRACK_STATUS`] header). For a tracked task the producer writes a `queued` record after the
//! publish ack, and the worker moves it through `running` → `succeeded` / `retrying` / `failed` /
//! `dead` / `cancelled`, adding progress, a small JSON result and the names of artifacts stored in
//! the object store. Untracked tasks never touch the bucket.
//!
//! | what | name (prefix `jetq`) |
//! |---|---|
//! | status bucket | KV `JETQ_STATUS`, key: [`key`] of the task id |
//! | artifact store | object store `JETQ_ARTIFACTS`, object: `<task id>/<artifact name>` |
//! | opt-in header | `Jetq-Track-Status: 1` |
//!
//! Every record is a [`TaskStatus`] serialized as JSON; see `docs/PROTOCOL.md` §8 and
//! `docs/STATUS.md`.

use std::{fmt, time::Duration};

use async_nats::jetstream::{self, kv, object_store, stream::StorageType};
use serde::{Deserialize, Serialize};

use crate::{
    failure::DeadReason,
    topology::{ProvisionError, Topology, ARTIFACT_CHECKS, STATUS_BUCKET_CHECKS},
};

/// Header that asks workers to track this task's status even if its type does not opt in.
/// Producers set it (value `1`) on every task of a tracked type.
pub const TRACK_STATUS: &str = "Jetq-Track-Status";

/// Largest JSON result a handler may keep in its status record, in bytes (64 KiB). Larger
/// outputs belong in the artifact store.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;
/// Longest progress message kept, in bytes; longer ones are cut.
pub const MAX_PROGRESS_MESSAGE: usize = 256;
/// Transitions kept in a record; older ones are dropped first.
pub const MAX_TRANSITIONS: usize = 50;
/// Longest error kept in a record, in bytes; longer ones are cut.
pub const MAX_STATUS_ERROR: usize = 1024;
/// Longest artifact name accepted.
pub const MAX_ARTIFACT_NAME: usize = 128;

/// Where a tracked task is in its life.
///
/// `succeeded`, `failed`, `dead` and `cancelled` are terminal: no writer replaces them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Enqueued, waiting for a worker (also after a shutdown handed it back).
    Queued,
    /// A worker runs attempt `attempt`.
    Running,
    /// Attempt `attempt` failed; the next one starts at `next_attempt_at`.
    Retrying,
    /// The handler returned `Ok` (terminal).
    Succeeded,
    /// The handler failed for good: a fatal error, or its last attempt failed, timed out,
    /// panicked or crashed its worker. The task is in dead letters (terminal).
    Failed,
    /// Dead-lettered without a handler verdict: undecodable payload, unknown task type, or
    /// deliveries exhausted (terminal).
    Dead,
    /// Cancelled before it ran, or stopped by its handler after a cancellation (terminal).
    Cancelled,
}

impl TaskState {
    /// True for the states no writer may replace.
    ///
    /// ```
    /// use jetq_contract::status::TaskState;
    /// assert!(TaskState::Succeeded.is_terminal());
    /// assert!(!TaskState::Retrying.is_terminal());
    /// ```
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Dead | TaskState::Cancelled
        )
    }

    /// The state as written in the record (`queued`, `running`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Retrying => "retrying",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Dead => "dead",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// The terminal state of a task dead-lettered for `reason`: `failed` when its handler gave
    /// the verdict (fatal error, attempts exhausted), `dead` otherwise.
    pub fn of_dead_reason(reason: DeadReason) -> TaskState {
        match reason {
            DeadReason::Fatal | DeadReason::Exhausted => TaskState::Failed,
            DeadReason::Undecodable | DeadReason::UnknownTask | DeadReason::DeliveriesExhausted => {
                TaskState::Dead
            }
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last progress a handler reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// 0 to 100.
    pub percent: f64,
    /// A short message (at most [`MAX_PROGRESS_MESSAGE`] bytes), e.g. `"row 400 of 1000"`.
    pub message: String,
    /// When it was reported, RFC 3339 UTC.
    pub at: String,
}

/// One state change, kept in [`TaskStatus::transitions`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The state entered.
    pub state: TaskState,
    /// The attempt it concerns (0 before the first delivery).
    pub attempt: u32,
    /// When, RFC 3339 UTC.
    pub at: String,
    /// The error that caused it (`retrying`, `failed`, `dead`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An artifact a handler stored in the object store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    /// Its name, unique within the task (e.g. `export.csv`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// The object store's digest (`SHA-256=<base64url>`), checked when it is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// The status record of one tracked task: the JSON value of its key in the status bucket.
///
/// Timestamps are RFC 3339 UTC strings as everywhere in the protocol
/// ([`crate::time::parse`] reads them).
///
/// ```
/// use jetq_contract::status::{TaskState, TaskStatus};
/// let mut status = TaskStatus::new("01J0", "exports", "generate_csv");
/// status.enter(TaskState::Running, None);
/// let json = status.to_json().unwrap();
/// let back = TaskStatus::from_json(&json).unwrap();
/// assert_eq!(back.state, TaskState::Running);
/// assert_eq!(back.transitions.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// The task id (`Nats-Msg-Id`).
    pub id: String,
    /// The task's queue.
    pub queue: String,
    /// The task's wire name.
    pub task: String,
    /// The current state.
    pub state: TaskState,
    /// The task's sequence in the task stream, once known. Tells a record of this task from one
    /// left by an earlier task with the same id. `None` on a delayed task not yet released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// The current or last attempt (0 while it never ran).
    #[serde(default)]
    pub attempt: u32,
    /// The attempts allowed, once a worker has seen the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// When it was enqueued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_at: Option<String>,
    /// When the current or last attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it reached a terminal state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// When the record was last written.
    pub updated_at: String,
    /// While `retrying`: when the next attempt is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// The last progress reported by the handler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// The handler's JSON result (`succeeded` only, at most [`MAX_RESULT_BYTES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The last error (at most [`MAX_STATUS_ERROR`] bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why it was dead-lettered (`failed`, `dead`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_reason: Option<DeadReason>,
    /// Artifacts of the successful attempt, in the artifact store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactInfo>,
    /// When cancellation was requested while it was running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested_at: Option<String>,
    /// Every state change, oldest first (at most [`MAX_TRANSITIONS`]).
    #[serde(default)]
    pub transitions: Vec<Transition>,
}

impl TaskStatus {
    /// A `queued` record, timestamped now.
    pub fn new(id: &str, queue: &str, task: &str) -> Self {
        let now = crate::time::now();
        TaskStatus {
            id: id.to_owned(),
            queue: queue.to_owned(),
            task: task.to_owned(),
            state: TaskState::Queued,
            sequence: None,
            attempt: 0,
            max_attempts: None,
            enqueued_at: None,
            started_at: None,
            finished_at: None,
            updated_at: now.clone(),
            next_attempt_at: None,
            progress: None,
            result: None,
            error: None,
            dead_reason: None,
            artifacts: Vec::new(),
            cancel_requested_at: None,
            transitions: vec![Transition {
                state: TaskState::Queued,
                attempt: 0,
                at: now,
                error: None,
            }],
        }
    }

    /// Moves to `state` now: records the transition, stamps `updated_at` (and `finished_at` for a
    /// terminal state) and clears `next_attempt_at` unless retrying.
    pub fn enter(&mut self, state: TaskState, error: Option<&str>) {
        let now = crate::time::now();
        let error = error.map(|text| truncate(text, MAX_STATUS_ERROR));
        self.state = state;
        self.updated_at = now.clone();
        if state != TaskState::Retrying {
            self.next_attempt_at = None;
        }
        if state.is_terminal() {
            self.finished_at = Some(now.clone());
        }
        if error.is_some() {
            self.error = error.clone();
        }
        self.transitions.push(Transition {
            state,
            attempt: self.attempt,
            at: now,
            error,
        });
        if self.transitions.len() > MAX_TRANSITIONS {
            let excess = self.transitions.len() - MAX_TRANSITIONS;
            self.transitions.drain(..excess);
        }
    }

    /// True if this record describes the task at `sequence` in the task stream: it carries that
    /// sequence, or none yet (written for a delayed task before its release).
    pub fn belongs_to(&self, sequence: u64) -> bool {
        self.sequence.is_none_or(|own| own == sequence)
    }

    /// True once a cancellation was asked for (queued: it is `cancelled`; running: the handler
    /// is told through its context).
    pub fn is_cancel_requested(&self) -> bool {
        self.state == TaskState::Cancelled || self.cancel_requested_at.is_some()
    }

    /// The record as stored: compact JSON.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Parses a stored record.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The status-bucket key of a task id.
///
/// KV keys allow only `[-/_=.A-Za-z0-9]` and a `.` splits subject tokens, while task ids are any
/// printable ASCII (idempotency keys such as `signup:ada@example.com`). Bytes of
/// `[A-Za-z0-9_-]` are kept, every other byte becomes `=` and two upper-case hex digits; the
/// empty id is `=`. ULIDs are their own key; the encoding is reversible ([`id_from_key`]).
///
/// ```
/// use jetq_contract::status::{id_from_key, key};
/// assert_eq!(key("01J9ZQ5W3V7Z"), "01J9ZQ5W3V7Z");
/// assert_eq!(key("signup:ada@example.com"), "signup=3Aada=40example=2Ecom");
/// assert_eq!(id_from_key(&key("a=b.c d")).as_deref(), Some("a=b.c d"));
/// ```
pub fn key(id: &str) -> String {
    if id.is_empty() {
        return "=".to_owned();
    }
    let mut out = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("={byte:02X}"));
        }
    }
    out
}

/// The task id of a status-bucket key; `None` if `key` is not an encoding made by [`key`].
pub fn id_from_key(key: &str) -> Option<String> {
    if key == "=" {
        return Some(String::new());
    }
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' => {
                let hex = key.get(i + 1..i + 3)?;
                if !hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
                {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// An artifact name that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid artifact name {name:?}: 1-{MAX_ARTIFACT_NAME} characters of A-Z a-z 0-9 . _ -, not starting with '.'")]
pub struct ArtifactNameError {
    /// The rejected name.
    pub name: String,
}

/// Checks an artifact name: 1-128 characters of `[A-Za-z0-9._-]`, not starting with `.`.
///
/// ```
/// use jetq_contract::status::validate_artifact_name;
/// assert!(validate_artifact_name("export.csv").is_ok());
/// assert!(validate_artifact_name("../x").is_err());
/// ```
pub fn validate_artifact_name(name: &str) -> Result<(), ArtifactNameError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_ARTIFACT_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ArtifactNameError {
            name: name.to_owned(),
        })
    }
}

/// The object-store name of a task's artifact: `<task id>/<name>` (the object store encodes
/// names itself, so the raw id is safe).
pub fn artifact_object(id: &str, name: &str) -> String {
    format!("{id}/{name}")
}

impl Topology {
    /// The status bucket's configuration: one value per key, kept for
    /// [`crate::StreamSettings::status_ttl`] after its last write.
    pub fn status_bucket_config(&self) -> kv::Config {
        kv::Config {
            bucket: self.subjects().status_bucket(),
            description: "jetq: status, progress and results of tracked tasks".into(),
            history: 1,
            max_age: self.settings().status_ttl,
            storage: StorageType::File,
            num_replicas: self.settings().stream_replicas,
            ..Default::default()
        }
    }

    /// The stream configuration behind the artifact object store (`OBJ_<bucket>`), as
    /// `create_object_store` would make it, with the status TTL as its max age.
    pub fn artifacts_stream_config(&self) -> jetstream::stream::Config {
        self.object_store_stream_config(
            &self.subjects().artifacts_bucket(),
            "jetq: artifacts of tracked tasks",
            self.settings().status_ttl,
            self.settings().artifacts_max_bytes,
        )
    }

    /// Creates the status bucket and the artifact store where they are missing (idempotent;
    /// retention follows `JETQ_STATUS_TTL`); existing ones are verified or updated as
    /// [`Topology::existing`] says.
    pub async fn ensure_status_stores(&self) -> Result<(), ProvisionError> {
        self.ensure_bucket_checked(self.status_bucket_config(), STATUS_BUCKET_CHECKS)
            .await?;
        self.ensure_stream(self.artifacts_stream_config(), ARTIFACT_CHECKS)
            .await?;
        Ok(())
    }

    /// The status bucket (created by [`Topology::ensure_status_stores`]).
    pub async fn status_bucket(&self) -> Result<kv::Store, ProvisionError> {
        let bucket = self.subjects().status_bucket();
        self.jetstream()
            .get_key_value(bucket.clone())
            .await
            .map_err(|err| ProvisionError::Bucket {
                bucket,
                source: Box::new(err),
            })
    }

    /// The artifact store (created by [`Topology::ensure_status_stores`]).
    pub async fn artifact_store(&self) -> Result<object_store::ObjectStore, ProvisionError> {
        let bucket = self.subjects().artifacts_bucket();
        self.jetstream()
            .get_object_store(&bucket)
            .await
            .map_err(|err| ProvisionError::Bucket {
                bucket,
                source: Box::new(err),
            })
    }
}

/// How long status records and artifacts are kept after their last write by default (24 h).
pub const DEFAULT_STATUS_TTL: Duration = Duration::from_secs(24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_every_printable_id() {
        let all: String = (0x21u8..0x7f).map(char::from).collect();
        for id in [
            "",
            "01J9ZQ5W3V7ZB4M8K2N6P0R1S3",
            "signup:ada@example.com",
            "a.b",
            "..",
            "=",
            "=3A",
            "dead:12:x",
            "nightly-report:2026-11-28T02:00:00Z",
            "é ü",
            all.as_str(),
        ] {
            let k = key(id);
            assert!(
                k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'=')),
                "{k}"
            );
            assert!(!k.starts_with('.') && !k.ends_with('.'));
            assert_eq!(id_from_key(&k).as_deref(), Some(id), "{k}");
        }
        assert_eq!(key("a.b"), "a=2Eb");
        assert_ne!(key("a.b"), key("a=2Eb"));
    }

    #[test]
    fn malformed_keys_do_not_decode() {
        for bad in ["=4", "=zz", "a.b", "=3a", "a b", "=FF"] {
            assert_eq!(id_from_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn terminal_states_and_dead_reasons() {
        assert!(TaskState::Cancelled.is_terminal());
        assert!(!TaskState::Queued.is_terminal());
        assert_eq!(
            TaskState::of_dead_reason(DeadReason::Fatal),
            TaskState::Failed
        );
        assert_eq!(
            TaskState::of_dead_reason(DeadReason::UnknownTask),
            TaskState::Dead
        );
    }

    #[test]
    fn records_keep_bounded_transitions_and_round_trip() {
        let mut status = TaskStatus::new("id", "q", "t");
        for attempt in 1..=60 {
            status.attempt = attempt;
            status.enter(TaskState::Retrying, Some(&"x".repeat(5000)));
        }
        assert_eq!(status.transitions.len(), MAX_TRANSITIONS);
        assert_eq!(status.transitions[0].attempt, 11);
        assert_eq!(
            status.error.as_ref().map(String::len),
            Some(MAX_STATUS_ERROR)
        );
        status.enter(TaskState::Succeeded, None);
        assert!(status.finished_at.is_some());
        let json = status.to_json().unwrap();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"state\":\"succeeded\""), "{text}");
        assert_eq!(TaskStatus::from_json(&json).unwrap(), status);
    }

    #[test]
    fn belongs_to_its_sequence_or_to_none() {
        let mut status = TaskStatus::new("id", "q", "t");
        assert!(status.belongs_to(7));
        status.sequence = Some(7);
        assert!(status.belongs_to(7));
        assert!(!status.belongs_to(8));
    }

    #[test]
    fn artifact_names() {
        for ok in ["export.csv", "a", "report_2026-01.json"] {
            assert!(validate_artifact_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(129)] {
            assert!(validate_artifact_name(bad).is_err(), "{bad}");
        }
        assert_eq!(artifact_object("id", "export.csv"), "id/export.csv");
    }
}
