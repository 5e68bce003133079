//! The [`Task`] trait: a serde type bound to a stable wire name, a queue and per-type defaults.

use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};

use crate::retry::RetryPolicy;

/// The queue a task type runs on when it does not name one.
pub const DEFAULT_QUEUE: &str = "default";

/// A task type: its arguments (the serde fields), its wire name, its queue and its defaults.
///
/// The producer and the consumer share the type, so enqueue is typed end to end. `NAME` is the
/// stable wire name: renaming the Rust type does not change it, and it is never derived from
/// `type_name`, which changes between compiler versions and module moves.
///
/// ```
/// use jetq_contract::{Task, TaskOptions};
/// use serde::{Deserialize, Serialize};
/// use std::time::Duration;
///
/// #[derive(Serialize, Deserialize)]
/// struct SendEmail {
///     to: String,
///     subject: String,
/// }
///
/// impl Task for SendEmail {
///     const NAME: &'static str = "send_email";
///     const QUEUE: &'static str = "emails";
///     fn options() -> TaskOptions {
///         TaskOptions::default().max_attempts(5).timeout(Duration::from_secs(30))
///     }
/// }
/// ```
pub trait Task: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Stable wire name: a subject token (`[A-Za-z0-9_-]`, at most 64 characters).
    const NAME: &'static str;
    /// Queue this type runs on: a subject token, one durable consumer per queue.
    const QUEUE: &'static str = DEFAULT_QUEUE;

    /// Per-type defaults: attempts, timeout, retry policy.
    fn options() -> TaskOptions {
        TaskOptions::default()
    }
}

/// Per-type defaults a worker applies to every task of the type.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOptions {
    /// Attempts before the task is dead-lettered, counting the first (default 10).
    pub max_attempts: u32,
    /// Limit on one attempt; a timed-out attempt is a retryable failure (default 5 minutes).
    pub timeout: Duration,
    /// Delay between attempts (default: exponential from 1 s, doubling, at most 1 h, ±20 %).
    pub retry: RetryPolicy,
    /// Keep a status record of every task of this type (default false: untracked tasks cost
    /// nothing). See [`crate::status`].
    pub track_status: bool,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            max_attempts: 10,
            timeout: Duration::from_secs(300),
            retry: RetryPolicy::default(),
            track_status: false,
        }
    }
}

impl TaskOptions {
    /// Sets the maximum number of attempts (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets the per-attempt timeout. When it runs out the worker stops waiting for the handler
    /// (its future is dropped) and the attempt fails as `timeout`. A handler that blocks its
    /// thread (CPU-bound work, a blocking call) cannot be stopped that way and stops its own
    /// heartbeats: run such work on `tokio::task::spawn_blocking` and check the context's
    /// `cancellation_token()` (see `docs/RELIABILITY.md`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Tracks the status of every task of this type: producers write a `queued` record and
    /// workers record each transition, progress, results and artifacts (see [`crate::status`]).
    ///
    /// ```
    /// let options = jetq_contract::TaskOptions::default().track_status(true);
    /// assert!(options.track_status);
    /// ```
    pub fn track_status(mut self, track: bool) -> Self {
        self.track_status = track;
        self
    }
}
