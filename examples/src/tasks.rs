//! The task types of the seed scenario, shared by the web app (which enqueues the first two), the
//! scheduler (which fires the periodic [`SendDigest`] from `examples/schedules.yaml`) and the
//! worker (which runs them all).

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

/// One chunk of a chunked export (a member of the export's chord): data lines `first_row` to
/// `first_row + rows - 1`, returned as the task's result (`{"chunk", "rows", "csv"}`). A chunk
/// of more than a few hundred rows is over 16 KiB, so the worker stores it in the results
/// store and the assembler gets it by reference.
///
/// Runs on queue `exports`, at most 3 attempts of 60 s each; tracked (a chord's members are).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportChunk {
    /// The export's id (also the chord's batch id).
    pub export_id: String,
    /// The chunk's index, from 0.
    pub chunk: u32,
    /// Its first data row (rows count from 1).
    pub first_row: u32,
    /// Its number of rows.
    pub rows: u32,
}

impl Task for ExportChunk {
    const NAME: &'static str = "export_chunk";
    const QUEUE: &'static str = "exports";

    fn options() -> TaskOptions {
        TaskOptions::default()
            .max_attempts(3)
            .timeout(Duration::from_secs(60))
    }
}

/// The callback of a chunked export's chord: assembles the chunks' CSV in chunk order into one
/// artifact (`export.csv` of this task), then enqueues the mail with the download link (the
/// next step of the flow, keyed `export-mail:<export_id>` so a re-run sends it once).
///
/// Runs on queue `exports`, at most 3 attempts of 5 minutes each, tracked (the web app reads
/// its status and streams its artifact).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssembleExport {
    /// The export's id (the chord's batch id).
    pub export_id: String,
    /// Who gets the link.
    pub email: String,
    /// The chord's summary, filled in by jetq when the chunks are done.
    #[serde(default)]
    pub batch: jetq_contract::workflow::BatchSummary,
}

impl Task for AssembleExport {
    const NAME: &'static str = "assemble_export";
    const QUEUE: &'static str = "exports";

    fn options() -> TaskOptions {
        TaskOptions::default()
            .max_attempts(3)
            .timeout(Duration::from_secs(300))
            .track_status(true)
    }
}

/// The periodic task of the seed scenario, fired by jetq-scheduler from `examples/schedules.yaml`
/// (schedule `demo-digest`) instead of a crontab line: mail a short digest to the team.
///
/// Runs on queue `emails` like the welcome mails, at most 3 attempts of 30 s each. Each fire has
/// its own deterministic task id, so a fire is sent once however many scheduler replicas run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendDigest {
    /// Recipient address, e.g. the team's list.
    pub to: String,
}

impl Task for SendDigest {
    const NAME: &'static str = "send_digest";
    const QUEUE: &'static str = "emails";

    fn options() -> TaskOptions {
        TaskOptions::default()
            .max_attempts(3)
            .timeout(Duration::from_secs(30))
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
        assert_eq!(
            (SendDigest::NAME, SendDigest::QUEUE),
            ("send_digest", "emails")
        );
    }

    /// The schedules file the demo and the docs use parses with the scheduler's own loader,
    /// and its digest schedule's arguments decode as the task the worker handles.
    #[test]
    fn the_example_schedules_fire_tasks_the_worker_handles() {
        let path = crate::repo_root().join("examples/schedules.yaml");
        let text = std::fs::read_to_string(&path).expect("examples/schedules.yaml");
        let schedules =
            jetq_scheduler::Schedules::from_yaml(&text, &path).expect("the file is valid");
        let digest = schedules
            .get("demo-digest")
            .expect("a demo-digest schedule");
        assert_eq!(
            (digest.queue.as_str(), digest.task.as_str()),
            (SendDigest::QUEUE, SendDigest::NAME)
        );
        let args: SendDigest =
            serde_json::from_slice(&digest.args).expect("args decode as SendDigest");
        assert!(args.to.contains('@'), "{args:?}");
    }
}
