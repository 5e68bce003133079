//! The outbox table's migration: `migrations/0001_jetq_outbox.sql`, the canonical schema every
//! writer (Rust, Django) and the relay share (PROTOCOL.md §10).

use sqlx::{Executor, PgPool};

use crate::{OutboxError, TableName};

/// The canonical migration for the default table name `jetq_outbox`.
pub const MIGRATION_0001: &str = include_str!("../migrations/0001_jetq_outbox.sql");

/// Creates the outbox table, its index and its NOTIFY trigger if missing (idempotent: every
/// statement is `IF NOT EXISTS` / `OR REPLACE`). Run it from your own migrations instead if you
/// have them (the SQL is [`MIGRATION_0001`], or [`TableName::migration_sql`] for another name).
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), jetq_outbox::OutboxError> {
/// jetq_outbox::migrate(&pool, &jetq_outbox::TableName::default()).await?;
/// # Ok(()) }
/// ```
pub async fn migrate(pool: &PgPool, table: &TableName) -> Result<(), OutboxError> {
    // One simple-query round trip runs every statement in one implicit transaction.
    pool.execute(table.migration_sql().as_str())
        .await
        .map_err(OutboxError::Database)?;
    Ok(())
}
