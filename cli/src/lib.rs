//! Operator tools for jetq: the admin API that the `jetq` command line and the web dashboard are
//! built on (and that tests drive directly).
//!
//! - [`Admin`]: one connection, configured from `JETQ_*` like every jetq binary;
//! - [`stats`]: per-queue pending, in flight, max in flight, redelivered, dead, delayed, paused,
//!   and rates from two samples ([`Admin::overview`], [`Admin::overview_sampled`]);
//! - [`dead`]: list and show dead letters with filters (queue, task, age, reason, task id),
//!   replay (re-enqueue with a deterministic id, then remove) and purge;
//! - [`pause`]: pause and resume a queue cluster-wide (nats-server 2.11+);
//! - [`enqueue`]: enqueue an untyped task, now or delayed;
//! - [`schedules`]: the scheduler's schedules with their next fires;
//! - [`catalog`]: the task types the workers published (queue, attempts, timeout, tracked);
//! - [`status`]: a tracked task's status, progress and result ([`Admin::task_status`],
//!   [`Admin::wait_for_task`]);
//! - [`limits`]: flow control — limits, their state, unique keys held, release by hand;
//! - [`workers`]: the live worker processes and their running tasks ([`Admin::workers`]);
//! - [`tasks`]: tasks by state, paged ([`Admin::tasks`]), one task by id ([`Admin::find_task`]);
//! - [`history`]: the per-minute metrics history of each queue, 24 hours
//!   ([`Admin::metrics_history`]);
//! - [`cancel`]: cancel any queued, delayed, retrying or running task ([`Admin::cancel_task`];
//!   a running untracked one through its worker, PROTOCOL §16), or every task matching a filter
//!   ([`Admin::cancel_matching`]);
//! - [`dashboard`]: the web dashboard (`jetq dashboard`).
//!
//! Every error is an [`AdminError`] with a [`ErrorKind`] that maps to a documented exit code.
//! See `docs/CLI.md`.

#![warn(missing_docs)]

mod admin;
pub mod cancel;
pub mod catalog;
pub mod dashboard;
pub mod dead;
pub mod enqueue;
pub mod error;
pub mod history;
pub mod limits;
pub mod pause;
pub mod purge;
pub mod schedules;
pub mod stats;
pub mod status;
pub mod tasks;
pub mod text;
pub mod workers;
pub mod workflows;

pub use admin::Admin;
pub use dead::{DeadFilter, DeadLetter, ReplayOptions, ReplayReport, Selection};
pub use enqueue::{EnqueueOutcome, EnqueueRequest, When};
pub use error::{AdminError, ErrorKind};
pub use stats::{Overview, QueueStats};
