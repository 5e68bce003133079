//! Worker control (PROTOCOL.md §16): a request/reply subject per worker, on core NATS (no
//! stream captures it), through which an operator asks the worker that runs a task to cancel
//! it. The worker id is the one of its presence record (§14), so `jetq cancel` and the console
//! find the worker there.
//!
//! The request is one JSON object [`CancelRequest`]; the worker replies one [`CancelReply`].
//! A worker that runs the task terminates its message (`+TERM`, so the server never delivers
//! it again) **before** it replies, then tells the handler (its context's cancellation token);
//! the attempt ends `cancelled`: no retry, no dead letter.

use serde::{Deserialize, Serialize};

/// The subject on which worker `worker_id` of installation `prefix` takes cancel requests:
/// `<prefix>.control.worker.<worker id>.cancel`.
pub fn cancel_subject(prefix: &str, worker_id: &str) -> String {
    format!("{prefix}.control.worker.{worker_id}.cancel")
}

/// Ask a worker to cancel a task it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// The task id (`Nats-Msg-Id`).
    pub id: String,
    /// The task's sequence in the task stream; 0 (or absent) matches any running task with
    /// this id.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sequence: u64,
    /// Who asks (logged by the worker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// A worker's answer to a [`CancelRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelReply {
    /// The worker ran the task: its message is terminated and its handler told.
    pub found: bool,
    /// The cancelled attempt's task-stream sequence (when found).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sequence: u64,
    /// The cancelled attempt, 1-based (when found).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub attempt: u32,
    /// Why the request was not understood (with `found: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_is_per_worker() {
        assert_eq!(
            cancel_subject("jetq", "h-1-01J9ZQ5W3V7ZB4M8K2N6P0R1S3"),
            "jetq.control.worker.h-1-01J9ZQ5W3V7ZB4M8K2N6P0R1S3.cancel"
        );
    }

    #[test]
    fn a_request_without_sequence_matches_any() {
        let request: CancelRequest = serde_json::from_str(r#"{"id":"a"}"#).unwrap();
        assert_eq!(request.sequence, 0);
        assert_eq!(serde_json::to_string(&request).unwrap(), r#"{"id":"a"}"#);
    }
}
