//! Transactional enqueue for jetq: write a task in the same PostgreSQL transaction as your
//! application's rows, and let `jetq-relay` publish it to NATS JetStream.
//!
//! - [`Outbox`] writes a task (typed like `Producer::enqueue`: keys, delays, overrides) as one
//!   row of the outbox table inside your `sqlx` transaction and returns its id. Commit, and the
//!   task will run; roll back, and it never existed.
//! - [`migrate`] creates the table ([`MIGRATION_0001`], `migrations/0001_jetq_outbox.sql`).
//! - [`relay::Relay`] (the `jetq-relay` binary) publishes committed rows oldest first, with the
//!   row's task id as `Nats-Msg-Id`, and deletes each row once JetStream acknowledged it.
//!
//! The guarantee and its limits are in `docs/OUTBOX.md`; the table is specified in
//! `docs/PROTOCOL.md` §10.

mod error;
mod migrate;
pub mod relay;
mod table;
mod writer;

pub use error::OutboxError;
pub use migrate::{migrate, MIGRATION_0001};
pub use table::{TableName, DEFAULT_TABLE};
pub use writer::Outbox;

/// The README's example, compiled as a doc test so that it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
