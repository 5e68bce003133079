//! Typed errors of the outbox writer and the relay.

use std::time::Duration;

use jetq_contract::ConfigError;
use jetq_producer::EnqueueError;

/// Why a task was not written to the outbox, or why the relay could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The table name is not a plain lowercase identifier.
    #[error(
        "invalid outbox table name {name:?} (JETQ_OUTBOX_TABLE): use 1-63 characters of a-z 0-9 _, \
         not starting with a digit"
    )]
    InvalidTable {
        /// The rejected name.
        name: String,
    },
    /// The task itself is invalid (name, key, arguments), exactly as `Producer::enqueue` would
    /// refuse it. Nothing was written.
    #[error(transparent)]
    Task(#[from] EnqueueError),
    /// The delay is longer than the outbox accepts. Nothing was written.
    #[error("task {task} cannot be delayed by {delay:?}: the maximum delay is {max:?}")]
    DelayTooLong {
        /// The task's wire name.
        task: String,
        /// The requested delay.
        delay: Duration,
        /// The maximum.
        max: Duration,
    },
    /// The outbox table does not exist in this database.
    #[error(
        "the outbox table {table} does not exist in this database: run the migration \
         (`jetq-relay migrate`, jetq_outbox::migrate, or the Django app's migrate) first"
    )]
    MissingTable {
        /// The table.
        table: String,
    },
    /// The configuration is unusable; the message names the variable to fix.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database refused or failed the statement.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl OutboxError {
    /// Maps a database error, recognising a missing table (SQLSTATE 42P01).
    pub(crate) fn from_db(table: &str, err: sqlx::Error) -> OutboxError {
        let undefined_table = err
            .as_database_error()
            .and_then(|db| db.code())
            .is_some_and(|code| code == "42P01");
        if undefined_table {
            OutboxError::MissingTable {
                table: table.to_owned(),
            }
        } else {
            OutboxError::Database(err)
        }
    }
}
