//! The failure record kept with a dead letter: why the task died and the error of each attempt.

use serde::{Deserialize, Serialize};

/// Why a task was moved to the dead-letter stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeadReason {
    /// Every allowed attempt failed (or the last one crashed its worker).
    Exhausted,
    /// The handler reported an error that retrying cannot fix.
    Fatal,
    /// The payload could not be decoded into the task type's arguments.
    Undecodable,
    /// No worker knew the task type for the whole grace period.
    UnknownTask,
    /// The server spent every delivery (`max_deliver`) without a worker dead-lettering the task;
    /// the sweeper moved it from the task stream.
    DeliveriesExhausted,
}

impl DeadReason {
    /// The value written in the `Jetq-Dead-Reason` header.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::Exhausted => "exhausted",
            DeadReason::Fatal => "fatal",
            DeadReason::Undecodable => "undecodable",
            DeadReason::UnknownTask => "unknown-task",
            DeadReason::DeliveriesExhausted => "deliveries-exhausted",
        }
    }
}

/// How one attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttemptOutcome {
    /// The handler returned an error.
    Error,
    /// The handler ran past the type's timeout.
    Timeout,
    /// The handler panicked.
    Panic,
    /// The worker running it disappeared (the delivery came back without a recorded result).
    Lost,
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptFailure {
    /// 1-based attempt number (the delivery count).
    pub attempt: u32,
    /// How it failed.
    pub outcome: AttemptOutcome,
    /// The error message and its sources, outermost first, joined with `: `.
    pub error: String,
    /// When the attempt failed, RFC 3339 UTC.
    pub at: String,
}

/// The failure record, carried as compact JSON in the dead letter's `Jetq-Failure` header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// Why the task died.
    pub reason: DeadReason,
    /// The number of deliveries the task had.
    pub attempts: u32,
    /// The final error, or why the task could not be run.
    pub error: String,
    /// Errors of earlier attempts, oldest first (at most [`MAX_KEPT_ATTEMPTS`], each at most
    /// [`MAX_ERROR_LEN`] bytes).
    pub history: Vec<AttemptFailure>,
    /// When the task was enqueued, if the header was present.
    pub enqueued_at: Option<String>,
    /// When the dead letter was written.
    pub dead_at: String,
}

/// Attempts whose errors are kept in a dead letter; older ones are dropped first.
pub const MAX_KEPT_ATTEMPTS: usize = 25;
/// Longest error message kept per attempt, in bytes (longer ones are cut on a char boundary).
pub const MAX_ERROR_LEN: usize = 1024;

/// Cuts `message` to [`MAX_ERROR_LEN`] bytes on a character boundary, marking the cut.
pub fn truncate_error(message: &str) -> String {
    if message.len() <= MAX_ERROR_LEN {
        return message.to_owned();
    }
    let mut end = MAX_ERROR_LEN;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_is_compact_single_line_json() {
        let record = FailureRecord {
            reason: DeadReason::Exhausted,
            attempts: 2,
            error: "line one\nline two".into(),
            history: vec![AttemptFailure {
                attempt: 1,
                outcome: AttemptOutcome::Timeout,
                error: "timed out".into(),
                at: "2026-01-01T00:00:00Z".into(),
            }],
            enqueued_at: None,
            dead_at: "2026-01-01T00:00:01Z".into(),
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(!json.contains('\n'), "header values cannot hold newlines");
        assert!(json.contains("\"reason\":\"exhausted\""));
        assert!(json.contains("\"outcome\":\"timeout\""));
        let back: FailureRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let long = "é".repeat(MAX_ERROR_LEN);
        let cut = truncate_error(&long);
        assert!(cut.len() <= MAX_ERROR_LEN + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(truncate_error("short"), "short");
    }
}
