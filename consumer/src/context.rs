//! [`TaskContext`]: what a handler knows about the attempt it runs.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use async_nats::{jetstream::object_store::ObjectStore, HeaderMap};
use jetq_contract::status::{
    self as wire, ArtifactInfo, Progress, TaskState, MAX_PROGRESS_MESSAGE, MAX_RESULT_BYTES,
};
use serde::Serialize;
use tokio::io::AsyncRead;
use tokio_util::sync::CancellationToken;

use crate::status::{
    artifact_info, object_meta, ArtifactWriter, ContextStatus, StatusError, Tracker,
};

/// Facts about the running attempt, handed to every handler.
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub(crate) id: Arc<str>,
    pub(crate) queue: Arc<str>,
    pub(crate) task: Arc<str>,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) sequence: u64,
    pub(crate) enqueued_at: SystemTime,
    pub(crate) timeout: Duration,
    /// Shared with the worker, which keeps them for a dead letter.
    pub(crate) headers: Arc<HeaderMap>,
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when this attempt is over for the worker: its timeout ran out, the shutdown
    /// grace ended, the task was cancelled, or the attempt ended otherwise.
    pub(crate) attempt_over: CancellationToken,
    /// Cancelled when the task is cancelled (a tracked task's tracker token, or worker control).
    pub(crate) cancel: CancellationToken,
    /// The status of a tracked task (the status methods are below).
    pub(crate) status: ContextStatus,
}

impl TaskContext {
    /// The task id (`Nats-Msg-Id`: a ULID or the caller's idempotency key).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The queue the task came from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The task's wire name.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// This attempt's number, starting at 1. Deliveries handed back without running to an
    /// outcome (a worker's shutdown grace ran out, no handler of the type yet) are not
    /// attempts: this is JetStream's delivery count minus those hand-backs.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The attempts allowed for this task.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// True on the last attempt: a failure now sends the task to dead letters.
    pub fn is_final_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }

    /// The task's sequence number in the task stream.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// When the task was enqueued (the producer's clock; the server's if the header is absent).
    pub fn enqueued_at(&self) -> SystemTime {
        self.enqueued_at
    }

    /// The limit of this attempt; the handler is cancelled when it runs out.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A header of the task message, e.g. `traceparent`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.as_str())
    }

    /// True once the worker is shutting down. Long handlers may check it to stop early at a
    /// safe point; a task still running when the grace period ends is handed back and retried.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Resolves when the worker starts shutting down.
    pub async fn shutting_down(&self) {
        self.shutdown.cancelled().await
    }

    /// A token cancelled when this attempt is over for the worker: its timeout ran out, the
    /// shutdown grace ended (the task is handed back), the task was cancelled, or the handler's
    /// future was dropped.
    ///
    /// The worker stops waiting for the handler at those points, but it cannot stop a thread.
    /// Blocking or CPU-bound work must run on a blocking thread (`spawn_blocking`) — on the
    /// handler's own thread it would stop the attempt's heartbeats and its timeout — and check
    /// this token at safe points to stop early:
    ///
    /// ```no_run
    /// # fn crunch_chunk(_i: u32) {}
    /// use jetq_consumer::{TaskContext, TaskError};
    ///
    /// async fn checksum(ctx: TaskContext) -> Result<(), TaskError> {
    ///     let token = ctx.cancellation_token();
    ///     tokio::task::spawn_blocking(move || {
    ///         for chunk in 0..1_000 {
    ///             if token.is_cancelled() {
    ///                 return; // timed out, handed back or cancelled: stop the work
    ///             }
    ///             crunch_chunk(chunk);
    ///         }
    ///     })
    ///     .await
    ///     .map_err(|err| TaskError::retry(format!("the blocking work failed: {err}")))?;
    ///     Ok(())
    /// }
    /// ```
    pub fn cancellation_token(&self) -> CancellationToken {
        self.attempt_over.clone()
    }
}

/// Status, progress, results, artifacts and cancellation of a tracked task (see
/// [`jetq_contract::TaskOptions::track_status`]). On an untracked task the writers return
/// [`StatusError::NotTracked`] and the task is never cancelled.
impl TaskContext {
    fn tracker(&self) -> Result<&Arc<Tracker>, StatusError> {
        match &self.status {
            ContextStatus::Tracked(tracker) => Ok(tracker),
            ContextStatus::Unavailable => Err(StatusError::Unavailable {
                task: self.task.to_string(),
            }),
            ContextStatus::Untracked => Err(StatusError::NotTracked {
                task: self.task.to_string(),
            }),
        }
    }

    /// True if this task keeps a status record.
    pub fn is_tracked(&self) -> bool {
        self.tracker().is_ok()
    }

    /// Reports progress: `percent` (clamped to 0–100) and a short message (cut at 256 bytes).
    /// Written at once; watchers (e.g. `Producer::watch`) see every report, so call it at a
    /// human pace (every percent, every second), not per item.
    ///
    /// ```no_run
    /// # async fn handler(ctx: jetq_consumer::TaskContext) -> Result<(), jetq_consumer::TaskError> {
    /// for step in 1..=10u32 {
    ///     // ... a tenth of the work ...
    ///     ctx.progress(f64::from(step) * 10.0, format!("step {step} of 10")).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn progress(
        &self,
        percent: f64,
        message: impl Into<String>,
    ) -> Result<(), StatusError> {
        let tracker = self.tracker()?;
        let percent = if percent.is_nan() {
            0.0
        } else {
            percent.clamp(0.0, 100.0)
        };
        let message = wire::truncate(&message.into(), MAX_PROGRESS_MESSAGE);
        let now = jetq_contract::time::now();
        tracker
            .update(|record| {
                if record.state != TaskState::Running {
                    return false;
                }
                record.progress = Some(Progress {
                    percent,
                    message: message.clone(),
                    at: now.clone(),
                });
                record.updated_at = now.clone();
                true
            })
            .await?;
        Ok(())
    }

    /// Keeps `result` (any serde value, at most 64 KiB as JSON) in the status record, written
    /// with `succeeded` when the handler returns `Ok`. A later call replaces it.
    ///
    /// A member of a batch (a chord's members pass their results to the callback) may set a
    /// result up to 64 MiB: one over 16 KiB is stored in the results store
    /// (`<PREFIX>_RESULTS`) and the callback gets a reference to it (docs/WORKFLOWS.md,
    /// "Chords"); one over 64 KiB is left out of the status record.
    ///
    /// ```no_run
    /// # fn handler(ctx: jetq_consumer::TaskContext) -> Result<(), jetq_consumer::TaskError> {
    /// ctx.set_result(&serde_json::json!({ "rows": 1000 }))?;
    /// # Ok(()) }
    /// ```
    pub fn set_result<R: Serialize>(&self, result: &R) -> Result<(), StatusError> {
        let tracker = self.tracker()?;
        let encode = |source| StatusError::Encode {
            id: self.id.to_string(),
            source,
        };
        let value = serde_json::to_value(result).map_err(encode)?;
        let size = serde_json::to_vec(&value).map_err(encode)?.len();
        let member = self.headers.get(jetq_contract::workflow::BATCH).is_some();
        let limit = if member {
            jetq_contract::workflow::results::MAX_MEMBER_RESULT
        } else {
            MAX_RESULT_BYTES
        };
        if size > limit {
            return Err(StatusError::ResultTooLarge {
                id: self.id.to_string(),
                size,
            });
        }
        let mut pending = tracker.pending();
        pending.result = Some(value);
        pending.result_oversized = size > MAX_RESULT_BYTES;
        Ok(())
    }

    /// Stores an artifact read from `reader` in the artifact store, under this task's id.
    /// Listed in the record when the handler succeeds; readable by the web tier with
    /// `Producer::artifact`. Storing the same name again (e.g. on a retry) replaces it.
    ///
    /// ```no_run
    /// # async fn handler(ctx: jetq_consumer::TaskContext) -> Result<(), jetq_consumer::TaskError> {
    /// let mut file = tokio::fs::File::open("/tmp/report.pdf").await?;
    /// ctx.put_artifact("report.pdf", &mut file).await?;
    /// # Ok(()) }
    /// ```
    pub async fn put_artifact<R>(
        &self,
        name: &str,
        reader: &mut R,
    ) -> Result<ArtifactInfo, StatusError>
    where
        R: AsyncRead + Unpin,
    {
        let tracker = self.tracker()?;
        wire::validate_artifact_name(name)?;
        let store = self.artifact_store(tracker, name)?;
        let info = store
            .put(object_meta(&self.id, name), reader)
            .await
            .map_err(|err| StatusError::Artifact {
                id: self.id.to_string(),
                name: name.to_owned(),
                source: Box::new(err),
            })?;
        let artifact = artifact_info(name, &info);
        tracker.pending().artifacts.retain(|a| a.name != name);
        tracker.pending().artifacts.push(artifact.clone());
        Ok(artifact)
    }

    /// A writer streaming an artifact into the artifact store as it is written, in 128 KiB
    /// chunks: nothing is buffered whole, in memory or on disk. Call
    /// [`ArtifactWriter::finish`] to commit it; a writer dropped before that stores nothing.
    ///
    /// ```no_run
    /// # async fn handler(ctx: jetq_consumer::TaskContext) -> Result<(), jetq_consumer::TaskError> {
    /// use tokio::io::AsyncWriteExt;
    /// let mut csv = ctx.artifact_writer("export.csv")?;
    /// csv.write_all(b"id,name\n1,ada\n").await?;
    /// csv.finish().await?;
    /// # Ok(()) }
    /// ```
    pub fn artifact_writer(&self, name: &str) -> Result<ArtifactWriter, StatusError> {
        let tracker = self.tracker()?;
        wire::validate_artifact_name(name)?;
        let store = self.artifact_store(tracker, name)?.clone();
        Ok(ArtifactWriter::start(
            store,
            tracker.clone(),
            &self.id,
            name,
        ))
    }

    fn artifact_store<'a>(
        &self,
        tracker: &'a Tracker,
        name: &str,
    ) -> Result<&'a ObjectStore, StatusError> {
        tracker
            .stores
            .objects
            .as_ref()
            .ok_or_else(|| StatusError::NoArtifactStore {
                id: self.id.to_string(),
                name: name.to_owned(),
            })
    }

    /// True once someone cancelled this task: `Producer::cancel` of a tracked task, or an
    /// operator's cancel of a running task sent to this worker (`jetq cancel`, the console;
    /// PROTOCOL.md §16). Cooperative: the handler decides where to stop. Whatever it returns
    /// afterwards, the task ends `cancelled` and is not retried.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the task is cancelled (see [`is_cancelled`](Self::is_cancelled)). Use it
    /// in a `tokio::select!` around the work.
    ///
    /// ```no_run
    /// # async fn long_work() {}
    /// # async fn handler(ctx: jetq_consumer::TaskContext) -> Result<(), jetq_consumer::TaskError> {
    /// tokio::select! {
    ///     _ = long_work() => {}
    ///     _ = ctx.cancelled() => return Err(jetq_consumer::TaskError::fatal("cancelled")),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }
}
