//! Typed errors of the scheduler.

use jetq_contract::{publish::PublishError, ConfigError, ConnectError, ProvisionError};

use crate::file::ScheduleFileError;

/// A boxed client error.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a scheduler could not be built or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// The configuration is unusable; the message names the variable to fix.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The connection failed or the server is too old.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A stream or the state bucket could not be created.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// The schedules file is unreadable or invalid; the message names each schedule and field.
    #[error(transparent)]
    Schedules(#[from] ScheduleFileError),
}

/// The state bucket could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("scheduler state {key}: {source}")]
pub struct StateError {
    key: String,
    source: BoxError,
}

impl StateError {
    pub(crate) fn new(key: &str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        StateError {
            key: key.to_owned(),
            source: Box::new(source),
        }
    }

    pub(crate) fn contended(key: &str) -> Self {
        StateError {
            key: key.to_owned(),
            source: "too many concurrent updates; will retry".into(),
        }
    }
}

/// A publish to the task stream failed (after resending timeouts with the same id, see
/// [`jetq_contract::publish`]).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PublishFailed(#[from] pub(crate) PublishError);

impl PublishFailed {
    /// What the publish helper said: the subject, the id, how many sends and the last error.
    pub fn publish_error(&self) -> &PublishError {
        &self.0
    }
}

/// One scheduling or release step failed; it is retried.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StepError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Publish(#[from] PublishFailed),
    #[error("delayed-task stream: {0}")]
    Stream(BoxError),
}

impl From<PublishError> for StepError {
    fn from(err: PublishError) -> Self {
        StepError::Publish(PublishFailed(err))
    }
}
