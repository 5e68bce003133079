//! Typed errors of the admin API, each mapped to one of the documented exit codes.

use std::fmt;

use jetq_contract::{ConfigError, ConnectError, NameError};

/// A boxed error from the NATS client.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The class of an [`AdminError`]: what a script can branch on. Each has a fixed exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong (bad name, bad JSON, contradictory options).
    Usage,
    /// What was asked for does not exist (queue, dead letter, task id, stream).
    NotFound,
    /// This server version or this build of jetq cannot do it.
    NotSupported,
    /// NATS could not be reached, refused the credentials or is too old.
    Unavailable,
    /// Anything else: a server error, a timeout, a partial failure.
    Failed,
}

impl ErrorKind {
    /// The process exit code the `jetq` binary uses for this class (see `docs/CLI.md`).
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Failed => exit::ERROR,
            ErrorKind::Usage => exit::USAGE,
            ErrorKind::NotFound => exit::NOT_FOUND,
            ErrorKind::NotSupported => exit::NOT_SUPPORTED,
            ErrorKind::Unavailable => exit::UNAVAILABLE,
        }
    }
}

/// The exit codes of the `jetq` binary. Scripts may rely on them.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A failure not covered below (server error, timeout, some items of a batch failed).
    pub const ERROR: u8 = 1;
    /// Bad command line or bad input (unknown option, invalid JSON, invalid queue name).
    pub const USAGE: u8 = 2;
    /// The queue, dead letter, task or stream does not exist.
    pub const NOT_FOUND: u8 = 3;
    /// Not supported by this nats-server version or not implemented in jetq yet.
    pub const NOT_SUPPORTED: u8 = 4;
    /// NATS unreachable, authentication refused, or the server is too old for jetq.
    pub const UNAVAILABLE: u8 = 5;
}

/// Why an admin operation failed. Messages say what to do next where there is something to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The configuration (`JETQ_*`) is unusable; the message names the variable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The connection failed, the credentials were refused, or the server is too old.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A queue or task name cannot be a subject token.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// Some other input is invalid.
    #[error("{0}")]
    Invalid(String),
    /// What was asked for does not exist.
    #[error("{what} not found{hint}", hint = Hint(.hint))]
    NotFound {
        /// What was looked for, e.g. `dead letter 42`.
        what: String,
        /// What the operator can do about it, if anything.
        hint: Option<String>,
    },
    /// The feature needs a newer server or is not built yet.
    #[error("not supported: {0}")]
    NotSupported(String),
    /// A JetStream request failed.
    #[error("{action}: {source}")]
    Nats {
        /// What was being done, e.g. `cannot read consumer worker-emails`.
        action: String,
        /// The client's or server's error.
        source: BoxError,
    },
    /// Enqueueing failed (from the producer).
    #[error(transparent)]
    Enqueue(#[from] jetq_producer::EnqueueError),
    /// A delayed enqueue failed.
    #[error(transparent)]
    Delay(#[from] jetq_producer::DelayError),
    /// Reading a task's status failed (other than "no record", which is [`AdminError::NotFound`]).
    #[error(transparent)]
    Status(jetq_producer::StatusError),
    /// The schedules file could not be used.
    #[error(transparent)]
    Schedules(#[from] jetq_scheduler::ScheduleFileError),
    /// A destructive command needs confirmation and standard input is not a terminal to ask
    /// on; the message says what would be done and names `--yes`.
    #[error(
        "{what}: refusing without confirmation because standard input is not a terminal; \
         pass --yes to go ahead (or --dry-run to see which)"
    )]
    ConfirmationRequired {
        /// What the command would do, e.g. `would delete 3001 dead letters`.
        what: String,
    },
    /// The operator answered no at the confirmation prompt; nothing was changed.
    #[error("not confirmed: nothing was changed")]
    NotConfirmed,
    /// A task cannot be cancelled where it is (e.g. running and not tracked); nothing changed.
    #[error("task {id} cannot be cancelled: {reason}")]
    CannotCancel {
        /// The task id.
        id: String,
        /// Why, and what would make it possible.
        reason: String,
    },
    /// A schedule request was refused (unknown schedule, or no scheduler state bucket).
    #[error("{0}")]
    Schedule(String),
    /// Part of a batch operation (replay, purge) failed; the rest was done.
    #[error("{failed} of {total} {operation} failed; first error: {first}")]
    Partial {
        /// `replays` or `deletions`.
        operation: &'static str,
        /// How many failed.
        failed: u64,
        /// How many were attempted.
        total: u64,
        /// The first error's message.
        first: String,
    },
}

struct Hint<'a>(&'a Option<String>);

impl fmt::Display for Hint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(hint) => write!(f, ": {hint}"),
            None => Ok(()),
        }
    }
}

impl AdminError {
    /// A JetStream failure while doing `action`.
    pub(crate) fn nats(action: impl Into<String>, source: impl Into<BoxError>) -> Self {
        AdminError::Nats {
            action: action.into(),
            source: source.into(),
        }
    }

    /// Something that does not exist.
    pub(crate) fn not_found(what: impl Into<String>, hint: Option<String>) -> Self {
        AdminError::NotFound {
            what: what.into(),
            hint,
        }
    }

    /// The class of this error (and so the exit code).
    pub fn kind(&self) -> ErrorKind {
        use jetq_producer::EnqueueError as E;
        match self {
            AdminError::Config(_)
            | AdminError::InvalidName(_)
            | AdminError::Invalid(_)
            | AdminError::ConfirmationRequired { .. } => ErrorKind::Usage,
            AdminError::NotConfirmed => ErrorKind::Failed,
            AdminError::Connect(_) => ErrorKind::Unavailable,
            AdminError::NotFound { .. } => ErrorKind::NotFound,
            AdminError::NotSupported(_) => ErrorKind::NotSupported,
            AdminError::Schedules(jetq_scheduler::ScheduleFileError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                ErrorKind::NotFound
            }
            AdminError::Schedules(_) => ErrorKind::Usage,
            AdminError::Enqueue(err)
            | AdminError::Delay(jetq_producer::DelayError::Enqueue(err)) => match err {
                E::InvalidName(_) | E::InvalidKey(_) | E::Serialize { .. } => ErrorKind::Usage,
                E::NoStream { .. } => ErrorKind::NotFound,
                E::NotConnected { .. } => ErrorKind::Unavailable,
                _ => ErrorKind::Failed,
            },
            AdminError::Delay(_) => ErrorKind::Usage,
            AdminError::Status(jetq_producer::StatusError::ArtifactName(_)) => ErrorKind::Usage,
            AdminError::Status(jetq_producer::StatusError::ArtifactNotFound { .. }) => {
                ErrorKind::NotFound
            }
            AdminError::Status(_) => ErrorKind::Failed,
            AdminError::Nats { .. } | AdminError::Partial { .. } => ErrorKind::Failed,
            AdminError::CannotCancel { .. } | AdminError::Schedule(_) => ErrorKind::Failed,
        }
    }

    /// The exit code of this error.
    pub fn exit_code(&self) -> u8 {
        self.kind().exit_code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_documented_codes() {
        assert_eq!(AdminError::Invalid("x".into()).exit_code(), 2);
        assert_eq!(AdminError::not_found("dead letter 4", None).exit_code(), 3);
        assert_eq!(AdminError::NotSupported("x".into()).exit_code(), 4);
        assert_eq!(AdminError::nats("doing", "boom").exit_code(), 1);
        let text = AdminError::not_found("queue q", Some("check the name".into())).to_string();
        assert_eq!(text, "queue q not found: check the name");
        assert_eq!(
            AdminError::not_found("queue q", None).to_string(),
            "queue q not found"
        );
    }
}
