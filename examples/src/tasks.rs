//! The two task types of the seed scenario, shared by the web app (which enqueues them) and the
//! worker (which runs them).

use std::time::Duration;

use jetq_contract::{Task, TaskOptions};
use serde::{Deserialize, Serialize};

/// Send one plain-text email over SMTP (a welcome mail after a signup).
///
/// Runs on queue `emails`, at most 5 attempts of 30 s each; SMTP's transient failures (4xx,
/// connection refused) are retried with backoff, permanent ones (5xx) dead-letter the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendEmail {
    /// Recipient address.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

impl Task for SendEmail {
    const NAME: &'static str = "send_email";
    const QUEUE: &'static str = "emails";

    fn options() -> TaskOptions {
        TaskOptions::default()
            .max_attempts(5)
            .timeout(Duration::from_secs(30))
    }
}

/// Generate a CSV export: a header line and `rows` data lines, sleeping `row_delay_ms` per row
/// (a stand-in for a slow query), so an export can outlive the queue's `ack_wait` and show that
/// heartbeats keep it from being redelivered.
///
/// Runs on queue `exports`, at most 3 attempts of 10 minutes each, with its status tracked: the
/// web app shows its progress, streams the CSV from the artifact store and can cancel it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerateCsv {
    /// The export's id, also its task id (`[A-Za-z0-9_-]`, at most 64 characters).
    pub export_id: String,
    /// Number of data rows (the file has one more line: the header).
    pub rows: u32,
    /// Pause after each row, in milliseconds.
    pub row_delay_ms: u64,
}

impl Task for GenerateCsv {
    const NAME: &'static str = "generate_csv";
    const QUEUE: &'static str = "exports";

    fn options() -> TaskOptions {
        TaskOptions::default()
            .max_attempts(3)
            .timeout(Duration::from_secs(600))
            .track_status(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_options_are_as_documented() {
        assert_eq!(
            (SendEmail::NAME, SendEmail::QUEUE),
            ("send_email", "emails")
        );
        assert_eq!(SendEmail::options().max_attempts, 5);
        assert_eq!(SendEmail::options().timeout, Duration::from_secs(30));
        assert_eq!(
            (GenerateCsv::NAME, GenerateCsv::QUEUE),
            ("generate_csv", "exports")
        );
        assert_eq!(GenerateCsv::options().max_attempts, 3);
        assert_eq!(GenerateCsv::options().timeout, Duration::from_secs(600));
        assert!(GenerateCsv::options().track_status);
        assert!(!SendEmail::options().track_status);
    }
}
