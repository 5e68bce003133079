//! [`TaskContext`]: what a handler knows about the attempt it runs.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use async_nats::HeaderMap;
use tokio_util::sync::CancellationToken;

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
    /// The status of a tracked task (see `status.rs` for the context's status methods).
    pub(crate) status: crate::status::ContextStatus,
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
