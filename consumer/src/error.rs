//! What a handler returns when an attempt fails, and what can go wrong building a worker.

use std::{fmt, time::Duration};

use jetq_contract::{ConfigError, ConnectError, HttpFailure, NameError, ProvisionError};

/// How a failed attempt should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Retry with the type's backoff, or after the given delay.
    Retry {
        /// Overrides the backoff for this retry (e.g. from a provider's `Retry-After`).
        after: Option<Duration>,
    },
    /// Do not retry: dead-letter the task now.
    Fatal,
}

/// The error a handler returns. Any `std::error::Error` converts into a retryable one, so `?`
/// works in handlers; use [`TaskError::fatal`] for errors retrying cannot fix and
/// [`TaskError::retry_after`] when the failing service says when to come back.
///
/// ```
/// use jetq_consumer::TaskError;
/// use std::time::Duration;
///
/// fn classify(status: u16) -> Result<(), TaskError> {
///     match status {
///         200 => Ok(()),
///         429 => Err(TaskError::retry_after(Duration::from_secs(30), "rate limited")),
///         400 => Err(TaskError::fatal("the provider rejected the address")),
///         _ => Err(TaskError::retry(format!("provider answered {status}"))),
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    kind: FailureKind,
    message: String,
    http: Option<HttpFailure>,
}

impl TaskError {
    /// A retryable failure; the next attempt follows the type's backoff.
    pub fn retry(error: impl fmt::Display) -> Self {
        TaskError {
            kind: FailureKind::Retry { after: None },
            message: error.to_string(),
            http: None,
        }
    }

    /// A retryable failure with an explicit delay before the next attempt.
    pub fn retry_after(delay: Duration, error: impl fmt::Display) -> Self {
        TaskError {
            kind: FailureKind::Retry { after: Some(delay) },
            message: error.to_string(),
            http: None,
        }
    }

    /// A permanent failure: the task goes to dead letters without further attempts.
    pub fn fatal(error: impl fmt::Display) -> Self {
        TaskError {
            kind: FailureKind::Fatal,
            message: error.to_string(),
            http: None,
        }
    }

    /// Attaches the HTTP response behind the failure. If the task is dead-lettered with this
    /// error (a fatal error, or the final attempt), the dead letter's failure record carries
    /// the status and the body excerpt in its `http` field.
    ///
    /// ```
    /// use jetq_consumer::{contract::HttpFailure, TaskError};
    ///
    /// let body = br#"{"error":"unknown account"}"#;
    /// let error = TaskError::fatal("endpoint answered 404 Not Found")
    ///     .with_http(HttpFailure::new(404, body));
    /// assert_eq!(error.http().map(|h| h.status), Some(404));
    /// ```
    pub fn with_http(mut self, http: HttpFailure) -> Self {
        self.http = Some(http);
        self
    }

    /// The HTTP response behind the failure, if one was attached.
    pub fn http(&self) -> Option<&HttpFailure> {
        self.http.as_ref()
    }

    /// How the failure is treated.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// The error message (with its sources, for converted errors).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E> From<E> for TaskError
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        TaskError::retry(error_chain(&error))
    }
}

/// An error and its sources, outermost first, joined with `: `.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.ends_with(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}

/// Why a worker could not be built or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The configuration is unusable; the message names the variable to fix.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The connection failed or the server is too old.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Streams, buckets or consumers could not be provisioned.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// A task type has an invalid queue or name.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// A flow-control limit is unusable (e.g. set for a type without a handler).
    #[error(transparent)]
    Flow(#[from] jetq_contract::flow::FlowError),
    /// Two handlers were registered for the same task.
    #[error("task {task} on queue {queue} has two handlers; register each task type once")]
    DuplicateHandler {
        /// The queue.
        queue: String,
        /// The task's wire name.
        task: String,
    },
    /// No handler was registered.
    #[error("the worker has no handlers; register at least one task type")]
    NoHandlers,
    /// A queue listed in `JETQ_QUEUES` (or [`WorkerBuilder::queues`](crate::WorkerBuilder::queues))
    /// has no registered handler: this binary cannot run its tasks.
    #[error(
        "queue {queue} is listed in JETQ_QUEUES but this worker has no handler for it \
         (it handles: {handled}); fix JETQ_QUEUES or register the queue's task types"
    )]
    QueueWithoutHandlers {
        /// The listed queue.
        queue: String,
        /// The queues this worker has handlers for, comma separated.
        handled: String,
    },
    /// A task type allows more attempts than its queue's `max_deliver` can deliver.
    #[error(
        "task {task} allows {max_attempts} attempts but queue {queue} delivers at most \
         {max_deliver} times; raise JETQ_MAX_DELIVER above {max_attempts} or lower the attempts"
    )]
    AttemptsExceedDeliveries {
        /// The queue.
        queue: String,
        /// The task's wire name.
        task: String,
        /// The type's attempts.
        max_attempts: u32,
        /// The queue's deliveries.
        max_deliver: i64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn converted_errors_keep_their_chain_and_retry() {
        let err: TaskError = Outer(std::io::Error::other("connection reset")).into();
        assert_eq!(err.message(), "outer: connection reset");
        assert_eq!(err.kind(), FailureKind::Retry { after: None });
    }

    #[test]
    fn constructors_set_the_kind() {
        assert_eq!(TaskError::fatal("x").kind(), FailureKind::Fatal);
        assert_eq!(
            TaskError::retry_after(Duration::from_secs(2), "x").kind(),
            FailureKind::Retry {
                after: Some(Duration::from_secs(2))
            }
        );
    }
}
