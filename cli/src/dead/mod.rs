//! Dead letters: list and show with filters, replay (re-enqueue, then remove), purge.
//!
//! One concept per module: [`letter`] (one dead letter as read), [`filter`] (which letters),
//! [`scan`] (reading them: scans, listings, one by sequence), [`replay`] (re-enqueueing) and
//! [`purge`] (removing). Everything public is re-exported here, so callers name
//! `jetq_cli::dead::DeadLetter` and so on.
//!
//! A replay re-enqueues a dead letter with the id `replay:<dead-letter sequence>:<task id>` and
//! removes the letter only after the task stream acknowledged it: a crash yields a duplicate at
//! worst, never a loss ([`replay`] says how).

use std::time::SystemTime;

use serde::Serialize;

use crate::error::AdminError;

pub mod filter;
pub mod letter;
pub mod purge;
pub mod replay;
pub mod scan;

pub(crate) use filter::Cutoffs;
pub use filter::{DeadFilter, Selection};
pub use letter::{DeadLetter, DeadSummary};
pub use purge::PurgeReport;
pub use replay::{replay_id, ReplayOptions, ReplayReport, Replayed};
pub use scan::{DeadPage, DeadScan, DeadSlice};

/// Headers a worker adds when it dead-letters a task; a replay drops them (the contract's
/// list, re-exported here for the CLI's users).
pub use jetq_contract::dead_letter::DEAD_LETTER_HEADERS;

/// Receives progress of long operations (the CLI draws a progress bar with it).
pub trait Progress: Send + Sync {
    /// The number of items expected (an upper bound when filters apply).
    fn set_total(&self, _total: u64) {}
    /// `n` more items are done.
    fn inc(&self, _n: u64) {}
}

impl Progress for () {}

/// A dead letter whose replay or deletion failed; it stays in the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemFailure {
    /// The dead letter's sequence.
    pub dead_sequence: u64,
    /// What went wrong.
    pub error: String,
}

/// A system time as the client's datetime type.
pub(crate) fn to_datetime(at: SystemTime) -> Result<async_nats::datetime::DateTime, AdminError> {
    let nanos = match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    };
    async_nats::datetime::from_nanos(nanos)
        .map_err(|err| AdminError::Invalid(format!("time out of range: {err}")))
}
