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
    /// The HTTP response that ended the task, when its handler called an HTTP endpoint and
    /// reported the response (jetq-push does; see `docs/PUSH.md`). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpFailure>,
}

/// The HTTP response behind a failure: its status and a bounded excerpt of its body.
///
/// ```
/// use jetq_contract::HttpFailure;
///
/// let failure = HttpFailure::new(404, "no such user".as_bytes());
/// assert_eq!(failure.status, 404);
/// assert_eq!(failure.body, "no such user");
/// assert!(!failure.body_truncated);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpFailure {
    /// The response status code.
    pub status: u16,
    /// The start of the response body, at most [`MAX_HTTP_BODY_EXCERPT`] bytes, decoded as
    /// UTF-8 with invalid sequences replaced.
    pub body: String,
    /// True when the body was longer than the excerpt.
    #[serde(default)]
    pub body_truncated: bool,
}

/// Longest excerpt of an HTTP response body kept in a failure record, in bytes.
pub const MAX_HTTP_BODY_EXCERPT: usize = 1024;

impl HttpFailure {
    /// The status and the first [`MAX_HTTP_BODY_EXCERPT`] bytes of `body` (cut on a character
    /// boundary). `body` may be longer than what was read; pass what you have.
    pub fn new(status: u16, body: &[u8]) -> Self {
        let mut end = body.len().min(MAX_HTTP_BODY_EXCERPT);
        let mut text = String::from_utf8_lossy(&body[..end]).into_owned();
        // A multi-byte character cut at the limit decodes as U+FFFD; drop it.
        if end < body.len() && text.ends_with('\u{FFFD}') {
            text.pop();
        }
        while text.len() > MAX_HTTP_BODY_EXCERPT {
            end = text.len() - 1;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        HttpFailure {
            status,
            body: text,
            body_truncated: body.len() > MAX_HTTP_BODY_EXCERPT,
        }
    }
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
            http: None,
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(!json.contains('\n'), "header values cannot hold newlines");
        assert!(json.contains("\"reason\":\"exhausted\""));
        assert!(json.contains("\"outcome\":\"timeout\""));
        let back: FailureRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn http_failure_is_optional_and_bounded() {
        let old = r#"{"reason":"fatal","attempts":1,"error":"x","history":[],"enqueued_at":null,"dead_at":"t"}"#;
        let record: FailureRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.http, None);
        assert!(!serde_json::to_string(&record).unwrap().contains("http"));

        let long = "é".repeat(MAX_HTTP_BODY_EXCERPT);
        let failure = HttpFailure::new(400, long.as_bytes());
        assert!(failure.body_truncated);
        assert!(failure.body.len() <= MAX_HTTP_BODY_EXCERPT);
        assert!(failure.body.chars().all(|c| c == 'é'));
        let short = HttpFailure::new(500, b"oops\xff");
        assert_eq!(short.body, "oops\u{FFFD}");
        assert!(!short.body_truncated);
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
