//! The worker side: the handlers of [`SendEmail`], [`GenerateCsv`] and the periodic
//! [`SendDigest`], their configuration, and [`build`], which registers them on a
//! [`WorkerBuilder`] (the binary and the tests use it alike).
//!
//! An export streams its CSV into the jetq artifact store (the web app streams it back out), so
//! worker pods and the web tier share no disk; it reports its progress and stops early when the
//! export is cancelled. A copy in a local directory (`EXPORT_DIR`) is optional.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use jetq_consumer::{ArtifactWriter, TaskContext, TaskError, WorkerBuilder};
use lettre::{
    message::{header::ContentType, Mailbox},
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::{
    tasks::{AssembleExport, ExportChunk, GenerateCsv, SendDigest, SendEmail},
    ConfigError,
};

/// The CSV header line every export starts with.
pub const CSV_HEADER: &str = "row,customer,amount_cents";
/// The name of an export's CSV in the artifact store.
pub const CSV_ARTIFACT: &str = "export.csv";
/// The subject line of the periodic digest ([`SendDigest`]).
pub const DIGEST_SUBJECT: &str = "jetq demo digest";

fn default_smtp_host() -> String {
    "127.0.0.1".to_owned()
}
fn default_smtp_port() -> u16 {
    2525
}
fn default_smtp_from() -> String {
    "jetq demo <noreply@jetq.example>".to_owned()
}
fn default_smtp_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Where the worker sends mail: plain SMTP (no TLS, no auth) to a local relay or test sink.
///
/// | variable | meaning |
/// |---|---|
/// | `SMTP_HOST` | server host (default `127.0.0.1`) |
/// | `SMTP_PORT` | server port (default `2525`) |
/// | `SMTP_FROM` | sender mailbox (default `jetq demo <noreply@jetq.example>`) |
/// | `SMTP_TIMEOUT` | per-command timeout (default `10s`) |
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SmtpConfig {
    /// Server host.
    #[serde(default = "default_smtp_host")]
    pub host: String,
    /// Server port.
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// Sender mailbox, e.g. `Shop <noreply@shop.example>`.
    #[serde(default = "default_smtp_from")]
    pub from: String,
    /// Timeout of each SMTP command.
    #[serde(default = "default_smtp_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: default_smtp_host(),
            port: default_smtp_port(),
            from: default_smtp_from(),
            timeout: default_smtp_timeout(),
        }
    }
}

impl SmtpConfig {
    /// Reads `SMTP_*` from the process environment and validates the sender.
    pub fn from_env() -> Result<Self, ConfigError> {
        let config: SmtpConfig = envy::prefixed("SMTP_")
            .from_env()
            .map_err(|err| ConfigError::from_envy("SMTP_", err))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that the sender is a mailbox and the timeout is not zero.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.from
            .parse::<Mailbox>()
            .map_err(|err| ConfigError::Invalid {
                variable: "SMTP_FROM",
                problem: format!("{:?} is not a mailbox: {err}", self.from),
            })?;
        if self.timeout.is_zero() {
            return Err(ConfigError::Invalid {
                variable: "SMTP_TIMEOUT",
                problem: "must be greater than zero".into(),
            });
        }
        Ok(())
    }
}

/// An optional local copy of every export: `EXPORT_DIR` (unset by default: the CSV goes to the
/// artifact store only, and the web app serves it from there).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ExportConfig {
    /// Directory for a copy of each CSV as `<export_id>.csv` (created if missing).
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

impl ExportConfig {
    /// Reads `EXPORT_*` from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        envy::prefixed("EXPORT_")
            .from_env()
            .map_err(|err| ConfigError::from_envy("EXPORT_", err))
    }
}

/// Everything the handlers need.
#[derive(Debug, Clone, Default)]
pub struct WorkerConfig {
    /// The SMTP server of [`SendEmail`].
    pub smtp: SmtpConfig,
    /// The optional local copy of [`GenerateCsv`]'s output.
    pub exports: ExportConfig,
    /// Where every attempt is recorded (for the demo's summary and for tests).
    pub activity: Activity,
    /// The limits of [`SendEmail`] (a rate limit, see [`crate::flow::email_limits`]).
    pub email_limits: jetq_consumer::Limits,
    /// What [`AssembleExport`] reads chunk results and enqueues the mail with (a chunked
    /// export fails without one).
    pub producer: Option<jetq_producer::Producer>,
}

impl WorkerConfig {
    /// Reads `SMTP_*` and `EXPORT_*` from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(WorkerConfig {
            smtp: SmtpConfig::from_env()?,
            exports: ExportConfig::from_env()?,
            activity: Activity::default(),
            email_limits: crate::flow::email_limits()?,
            producer: None,
        })
    }
}

/// How an attempt recorded in [`Activity`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptStatus {
    /// Still running.
    Running,
    /// The handler returned `Ok`.
    Succeeded,
    /// The handler returned an error (retryable unless `fatal`).
    Failed {
        /// The error message.
        error: String,
        /// True for a [`TaskError::fatal`].
        fatal: bool,
    },
    /// The handler was dropped before it finished (timeout or shutdown hand-back).
    Cancelled,
}

/// One handler invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The task's wire name.
    pub task: String,
    /// The task id.
    pub task_id: String,
    /// The attempt number (1 for the first delivery).
    pub attempt: u32,
    /// How it went so far.
    pub status: AttemptStatus,
    /// How long it ran (until now, while running).
    pub duration: Duration,
}

#[derive(Debug)]
struct Entry {
    record: AttemptRecord,
    started: Instant,
}

/// A shared, append-only log of handler invocations. Cheap to clone: clones share the log.
#[derive(Debug, Clone, Default)]
pub struct Activity {
    entries: Arc<Mutex<Vec<Entry>>>,
}

impl Activity {
    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every attempt so far, in start order.
    pub fn attempts(&self) -> Vec<AttemptRecord> {
        self.lock()
            .iter()
            .map(|entry| {
                let mut record = entry.record.clone();
                if record.status == AttemptStatus::Running {
                    record.duration = entry.started.elapsed();
                }
                record
            })
            .collect()
    }

    /// The attempts of one task id, in start order.
    pub fn attempts_of(&self, task_id: &str) -> Vec<AttemptRecord> {
        self.attempts()
            .into_iter()
            .filter(|record| record.task_id == task_id)
            .collect()
    }

    /// Runs `work` as the attempt described by `context` and records how it ended.
    pub async fn track<T, F>(&self, context: &TaskContext, work: F) -> Result<T, TaskError>
    where
        F: std::future::Future<Output = Result<T, TaskError>>,
    {
        let index = {
            let mut entries = self.lock();
            entries.push(Entry {
                record: AttemptRecord {
                    task: context.task().to_owned(),
                    task_id: context.id().to_owned(),
                    attempt: context.attempt(),
                    status: AttemptStatus::Running,
                    duration: Duration::ZERO,
                },
                started: Instant::now(),
            });
            entries.len() - 1
        };
        // Marks the attempt cancelled if the future is dropped before it finishes.
        let mut guard = FinishGuard {
            activity: self,
            index,
            status: AttemptStatus::Cancelled,
        };
        let result = work.await;
        guard.status = match &result {
            Ok(_) => AttemptStatus::Succeeded,
            Err(err) => AttemptStatus::Failed {
                error: err.message().to_owned(),
                fatal: err.kind() == jetq_consumer::FailureKind::Fatal,
            },
        };
        result
    }
}

struct FinishGuard<'a> {
    activity: &'a Activity,
    index: usize,
    status: AttemptStatus,
}

impl Drop for FinishGuard<'_> {
    fn drop(&mut self) {
        let mut entries = self.activity.lock();
        if let Some(entry) = entries.get_mut(self.index) {
            entry.record.duration = entry.started.elapsed();
            entry.record.status = std::mem::replace(&mut self.status, AttemptStatus::Cancelled);
        }
    }
}

/// Registers the handlers of [`SendEmail`] and [`GenerateCsv`] on `builder`.
pub fn build(builder: WorkerBuilder, config: WorkerConfig) -> WorkerBuilder {
    let smtp = Arc::new(config.smtp);
    let export_dir = Arc::new(config.exports.dir);
    let email_activity = config.activity.clone();
    let digest_activity = config.activity.clone();
    let digest_smtp = smtp.clone();
    let chunk_activity = config.activity.clone();
    let assemble_activity = config.activity.clone();
    let producer = config.producer;
    let export_activity = config.activity;
    builder
        .handler(move |chunk: ExportChunk, context: TaskContext| {
            let activity = chunk_activity.clone();
            async move {
                activity
                    .track(&context, async {
                        crate::chunked::run_chunk(&context, &chunk)?;
                        Ok(())
                    })
                    .await
            }
        })
        .handler(move |task: AssembleExport, context: TaskContext| {
            let activity = assemble_activity.clone();
            let producer = producer.clone();
            async move {
                activity
                    .track(&context, async {
                        let assembled =
                            crate::chunked::assemble(&context, &task, producer.as_ref()).await?;
                        tracing::info!(
                            export_id = %task.export_id,
                            rows = assembled.rows,
                            chunks = assembled.chunks,
                            by_reference = assembled.by_reference,
                            "chunked export assembled"
                        );
                        Ok(())
                    })
                    .await
            }
        })
        // At most 14 mails a second across every worker pod (EMAIL_RATE_LIMIT); a mail over
        // the limit waits for its turn without using up an attempt.
        .limits::<SendEmail>(config.email_limits)
        .handler(move |digest: SendDigest, context: TaskContext| {
            let smtp = digest_smtp.clone();
            let activity = digest_activity.clone();
            async move {
                activity
                    .track(&context, async {
                        let email = SendEmail {
                            to: digest.to,
                            subject: DIGEST_SUBJECT.into(),
                            body: format!(
                                "Fired by jetq-scheduler (schedule demo-digest in \
                                 examples/schedules.yaml), not by a crontab line.\nTask {} \
                                 enqueued at {}.\n",
                                context.id(),
                                jetq_contract::time::format(context.enqueued_at())
                            ),
                        };
                        send_email(&smtp, email).await?;
                        tracing::info!(task_id = context.id(), "digest sent");
                        Ok(())
                    })
                    .await
            }
        })
        .handler(move |email: SendEmail, context: TaskContext| {
            let smtp = smtp.clone();
            let activity = email_activity.clone();
            async move {
                activity
                    .track(&context, async {
                        send_email(&smtp, email).await?;
                        tracing::info!(
                            task_id = context.id(),
                            attempt = context.attempt(),
                            "email sent"
                        );
                        Ok(())
                    })
                    .await
            }
        })
        .handler(move |export: GenerateCsv, context: TaskContext| {
            let export_dir = export_dir.clone();
            let activity = export_activity.clone();
            async move {
                activity
                    .track(&context, async {
                        let summary = generate_csv(&context, &export).await?;
                        if let Some(dir) = export_dir.as_deref() {
                            let path = write_csv_file(dir, export).await?;
                            tracing::info!(path = %path.display(), "local copy written");
                        }
                        tracing::info!(
                            task_id = context.id(),
                            bytes = summary.bytes,
                            "export stored"
                        );
                        Ok(())
                    })
                    .await
            }
        })
}

/// Sends `email` through the SMTP server of `config`.
///
/// A transient failure (a 4xx reply, connection refused, a timeout) is a retryable
/// [`TaskError`]; a permanent one (a 5xx reply) or an unusable address is fatal.
pub async fn send_email(config: &SmtpConfig, email: SendEmail) -> Result<(), TaskError> {
    let from: Mailbox = config
        .from
        .parse()
        .map_err(|err| TaskError::fatal(format!("SMTP_FROM {:?}: {err}", config.from)))?;
    let to: Mailbox = email
        .to
        .parse()
        .map_err(|err| TaskError::fatal(format!("recipient {:?}: {err}", email.to)))?;
    let message = Message::builder()
        .from(from)
        .to(to)
        .subject(email.subject)
        .header(ContentType::TEXT_PLAIN)
        .body(email.body)
        .map_err(|err| TaskError::fatal(format!("cannot build the message: {err}")))?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.as_str())
        .port(config.port)
        .timeout(Some(config.timeout))
        .build();
    match transport.send(message).await {
        Ok(_) => Ok(()),
        Err(err) => {
            let text = format!(
                "SMTP {}:{}: {}",
                config.host,
                config.port,
                jetq_consumer::error_chain(&err)
            );
            if err.is_permanent() {
                Err(TaskError::fatal(text))
            } else {
                Err(TaskError::retry(text))
            }
        }
    }
}

/// Checks that an export id can be a file name: 1-64 characters of `[A-Za-z0-9_-]`.
pub fn validate_export_id(export_id: &str) -> Result<(), String> {
    let valid = !export_id.is_empty()
        && export_id.len() <= 64
        && export_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "export id {export_id:?} is not 1-64 characters of A-Z a-z 0-9 _ -"
        ))
    }
}

/// The file a local copy of an export is written to.
pub fn export_path(dir: &Path, export_id: &str) -> PathBuf {
    dir.join(format!("{export_id}.csv"))
}

/// Data line `row` of every export (with its newline).
pub fn csv_line(row: u32) -> String {
    format!(
        "{row},customer-{:04},{}\n",
        row % 1000,
        (u64::from(row) * 7919) % 100_000
    )
}

/// What a finished export keeps in its status record (its result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportSummary {
    /// Data rows written.
    pub rows: u32,
    /// Size of the CSV in bytes.
    pub bytes: u64,
}

/// Runs an export: streams the CSV into the artifact store as [`CSV_ARTIFACT`] row by row
/// (sleeping `row_delay_ms` after each, a stand-in for a slow query), reports progress about
/// every percent, and stops at the next row once the export is cancelled. The summary becomes
/// the task's result. A retry writes the artifact again from the start, replacing it.
pub async fn generate_csv(
    context: &TaskContext,
    export: &GenerateCsv,
) -> Result<ExportSummary, TaskError> {
    validate_export_id(&export.export_id).map_err(TaskError::fatal)?;
    let mut csv: ArtifactWriter = context.artifact_writer(CSV_ARTIFACT)?;
    csv.write_all(format!("{CSV_HEADER}\n").as_bytes()).await?;
    let delay = Duration::from_millis(export.row_delay_ms);
    let mut reported = 0;
    for row in 1..=export.rows {
        if context.is_cancelled() {
            return Err(TaskError::fatal("export cancelled"));
        }
        csv.write_all(csv_line(row).as_bytes()).await?;
        let percent = u64::from(row) * 100 / u64::from(export.rows.max(1));
        if percent > reported {
            reported = percent;
            let message = format!("{row} of {} rows", export.rows);
            if let Err(err) = context.progress(percent as f64, message).await {
                tracing::warn!(error = %err, "could not report progress");
            }
        }
        if !delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = context.cancelled() => {}
            }
        }
    }
    let stored = csv.finish().await?;
    let summary = ExportSummary {
        rows: export.rows,
        bytes: stored.size,
    };
    context.set_result(&summary)?;
    Ok(summary)
}

/// Writes a copy of the export to `<dir>/<export_id>.csv` (no pauses), into a temporary file
/// renamed into place at the end, so a failed or repeated attempt never leaves a half-written
/// file. If the file already exists (an earlier attempt finished but its ack was lost), nothing
/// is written again. Returns the file's path.
pub async fn write_csv_file(dir: &Path, export: GenerateCsv) -> Result<PathBuf, TaskError> {
    validate_export_id(&export.export_id).map_err(TaskError::fatal)?;
    let target = export_path(dir, &export.export_id);
    if tokio::fs::try_exists(&target).await.unwrap_or(false) {
        tracing::info!(path = %target.display(), "export exists already; not writing it again");
        return Ok(target);
    }
    tokio::fs::create_dir_all(dir).await.map_err(|err| {
        TaskError::retry(format!("cannot create export dir {}: {err}", dir.display()))
    })?;
    // Unique per attempt, so a concurrent redelivery could never write into the same file.
    let temp = dir.join(format!(
        ".{}.{}.csv.tmp",
        export.export_id,
        ulid::Ulid::new()
    ));
    let result = write_rows(&temp, &export).await;
    let result = match result {
        Ok(()) => tokio::fs::rename(&temp, &target)
            .await
            .map_err(|err| format!("cannot move the export into place: {err}")),
        Err(err) => Err(err),
    };
    match result {
        Ok(()) => Ok(target),
        Err(err) => {
            let _ = tokio::fs::remove_file(&temp).await;
            Err(TaskError::retry(format!("{}: {err}", target.display())))
        }
    }
}

async fn write_rows(temp: &Path, export: &GenerateCsv) -> Result<(), String> {
    // Removes the temporary file if the attempt is dropped (timeout, hand-back) mid-way.
    struct RemoveOnDrop<'a>(Option<&'a Path>);
    impl Drop for RemoveOnDrop<'_> {
        fn drop(&mut self) {
            if let Some(path) = self.0 {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    let mut cleanup = RemoveOnDrop(Some(temp));
    let file = tokio::fs::File::create(temp)
        .await
        .map_err(|err| format!("cannot create {}: {err}", temp.display()))?;
    let mut out = tokio::io::BufWriter::new(file);
    let write_error = |err: std::io::Error| format!("cannot write {}: {err}", temp.display());
    out.write_all(format!("{CSV_HEADER}\n").as_bytes())
        .await
        .map_err(write_error)?;
    for row in 1..=export.rows {
        out.write_all(csv_line(row).as_bytes())
            .await
            .map_err(write_error)?;
    }
    out.flush().await.map_err(write_error)?;
    out.get_ref().sync_all().await.map_err(write_error)?;
    cleanup.0 = None;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_header_and_rows_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let export = GenerateCsv {
            export_id: "exp-1".into(),
            rows: 25,
            row_delay_ms: 0,
        };
        let path = write_csv_file(dir.path(), export.clone()).await.unwrap();
        assert_eq!(path, dir.path().join("exp-1.csv"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 26);
        assert_eq!(text.lines().next(), Some(CSV_HEADER));
        // No temporary file is left behind, and a repeat keeps the file as it is.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        write_csv_file(dir.path(), export).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        assert_eq!(text.lines().nth(3), Some(csv_line(3).trim_end()));
    }

    #[tokio::test]
    async fn rejects_export_ids_that_are_not_file_names() {
        let dir = tempfile::tempdir().unwrap();
        for id in ["", "../etc/passwd", "a/b", "x.csv"] {
            let export = GenerateCsv {
                export_id: id.into(),
                rows: 1,
                row_delay_ms: 0,
            };
            let err = write_csv_file(dir.path(), export).await.unwrap_err();
            assert_eq!(err.kind(), jetq_consumer::FailureKind::Fatal, "{id:?}");
        }
    }

    #[tokio::test]
    async fn refused_connection_is_retryable_and_bad_recipient_fatal() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let config = SmtpConfig {
            port,
            timeout: Duration::from_secs(5),
            ..SmtpConfig::default()
        };
        let email = SendEmail {
            to: "ada@example.com".into(),
            subject: "hi".into(),
            body: "hello".into(),
        };
        let err = send_email(&config, email.clone()).await.unwrap_err();
        assert_eq!(
            err.kind(),
            jetq_consumer::FailureKind::Retry { after: None },
            "{err}"
        );
        let bad = SendEmail {
            to: "not an address".into(),
            ..email
        };
        let err = send_email(&config, bad).await.unwrap_err();
        assert_eq!(err.kind(), jetq_consumer::FailureKind::Fatal, "{err}");
    }

    /// A scripted SMTP server answering `RCPT TO` with `reply`; returns its port.
    async fn scripted_smtp(reply: &'static str) -> u16 {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            write.write_all(b"220 test ESMTP\r\n").await.unwrap();
            while let Ok(Some(line)) = lines.next_line().await {
                let answer = match line.get(..4).map(str::to_ascii_uppercase).as_deref() {
                    Some("RCPT") => reply.to_owned(),
                    Some("QUIT") => "221 bye".to_owned(),
                    _ => "250 ok".to_owned(),
                };
                write
                    .write_all(format!("{answer}\r\n").as_bytes())
                    .await
                    .unwrap();
            }
        });
        port
    }

    #[tokio::test]
    async fn smtp_replies_decide_retry_or_fatal() {
        let email = SendEmail {
            to: "ada@example.com".into(),
            subject: "hi".into(),
            body: "hello".into(),
        };
        for (reply, expected) in [
            (
                "451 4.3.0 try again later",
                jetq_consumer::FailureKind::Retry { after: None },
            ),
            ("550 5.1.1 no such user", jetq_consumer::FailureKind::Fatal),
        ] {
            let config = SmtpConfig {
                port: scripted_smtp(reply).await,
                timeout: Duration::from_secs(5),
                ..SmtpConfig::default()
            };
            let err = send_email(&config, email.clone()).await.unwrap_err();
            assert_eq!(err.kind(), expected, "{reply}: {err}");
            assert!(err.message().contains(&reply[..3]), "{err}");
        }
    }

    #[test]
    fn smtp_config_checks_the_sender() {
        assert!(SmtpConfig::default().validate().is_ok());
        let bad = SmtpConfig {
            from: "nobody".into(),
            ..SmtpConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("SMTP_FROM"));
    }
}
