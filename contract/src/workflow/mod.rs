//! Batches and workflows (PROTOCOL.md §13, docs/WORKFLOWS.md): a group of tasks with callbacks
//! fired exactly once when every member finished (`on_complete`) or succeeded (`on_success`),
//! nested batches, chords (a batch whose callback receives its members' results) and chains
//! (a task that runs after another succeeded).
//!
//! Everything lives in one KV bucket, `<PREFIX>_BATCHES`, written by compare-and-set: no
//! coordinator, no leader. Whoever finishes a member (the worker, before it acknowledges the
//! task) records the member's outcome, counts it, and fires the callbacks when the batch is
//! complete; a crash anywhere leaves the member unacknowledged, and its redelivery finishes the
//! job.
//!
//! - [`batch`]: the records, keys and headers (pure, as every language computes them);
//! - [`engine`]: the round trips on the bucket shared by the producer and the worker (finish a
//!   member, check a batch's completion, fire its callbacks, advance a chain).

pub mod batch;
pub mod chain;
pub mod engine;
mod listing;
pub mod results;

pub use batch::{
    BatchRecord, BatchState, BatchSummary, Callback, Fire, MemberMarker, MemberOutcome,
    MemberResult,
};
pub use chain::{ChainLink, ChainRecord, ChainState};

use crate::Subjects;

/// Header: the batch a task is a member of (its id).
pub const BATCH: &str = "Jetq-Batch";
/// Header: the chain a task is a link of, and its index: `<chain id>:<index>`.
pub const CHAIN: &str = "Jetq-Chain";

/// The workflow headers as [`HeaderName`](async_nats::header::HeaderName)s.
pub mod names {
    use async_nats::header::HeaderName;

    /// [`BATCH`](super::BATCH).
    pub const BATCH: HeaderName = HeaderName::from_static(super::BATCH);
    /// [`CHAIN`](super::CHAIN).
    pub const CHAIN: HeaderName = HeaderName::from_static(super::CHAIN);
}

/// The workflow bucket's name: `<PREFIX>_BATCHES` (`JETQ_BATCHES` by default).
pub fn bucket(subjects: &Subjects) -> String {
    subjects
        .attempts_bucket()
        .strip_suffix("_ATTEMPTS")
        .map(|upper| format!("{upper}_BATCHES"))
        .unwrap_or_else(|| "JETQ_BATCHES".to_owned())
}

/// How long a batch's or chain's records live after their last write: a week. A batch whose
/// members wait longer than that loses its bookkeeping (its callbacks never fire).
pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// The workflow bucket's settings: history 1, file storage, entries expire [`MAX_AGE`] after
/// their last write.
pub fn bucket_config(topology: &crate::Topology) -> async_nats::jetstream::kv::Config {
    async_nats::jetstream::kv::Config {
        bucket: bucket(topology.subjects()),
        description: "jetq batches and chains: b.<batch>, m.<batch>.<member>, c.<chain>".into(),
        history: 1,
        max_age: MAX_AGE,
        storage: async_nats::jetstream::stream::StorageType::File,
        num_replicas: topology.settings().stream_replicas,
        ..Default::default()
    }
}

/// Why a batch or chain cannot be made. Refused before anything is sent or stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowError {
    /// A batch or chain id outside `[A-Za-z0-9_-]{1,64}`.
    #[error(
        "invalid {what} id {value:?}: 1 to 64 characters of A-Z, a-z, 0-9, _ and - are allowed"
    )]
    InvalidId {
        /// `batch` or `chain`.
        what: &'static str,
        /// The id as given.
        value: String,
    },
    /// A callback whose arguments are not a JSON object (the summary is added to them).
    #[error("the arguments of callback {task} are not a JSON object: the batch summary is added to them as field \"batch\"")]
    CallbackArgsNotAnObject {
        /// The callback's task type.
        task: String,
    },
    /// A chain with no link, or a graph of links with a cycle.
    #[error("invalid chain: {0}")]
    InvalidChain(String),
}

/// Checks a batch or chain id: `[A-Za-z0-9_-]{1,64}`, so that it is a KV key token as is.
pub fn validate_id(what: &'static str, id: &str) -> Result<(), WorkflowError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(WorkflowError::InvalidId {
            what,
            value: id.to_owned(),
        })
    }
}

/// Test-only fault points: with the `test-faults` feature and `JETQ_TEST_FAULT=<point>` (or
/// `<point>:<n>` for the n-th time the point is reached) in the environment, the process exits
/// at once (status 86) when it reaches `point`, as if killed. Without the feature it does
/// nothing. Used by the workflow kill tests; not part of the API.
#[doc(hidden)]
#[inline]
pub fn fault(point: &str) {
    #[cfg(feature = "test-faults")]
    {
        use std::sync::{
            atomic::{AtomicU64, Ordering},
            OnceLock,
        };
        static WANTED: OnceLock<Option<(String, u64)>> = OnceLock::new();
        static SEEN: AtomicU64 = AtomicU64::new(0);
        let wanted = WANTED.get_or_init(|| {
            let value = std::env::var("JETQ_TEST_FAULT").ok()?;
            let (name, nth) = match value.split_once(':') {
                Some((name, nth)) => (name.to_owned(), nth.parse().unwrap_or(1)),
                None => (value, 1),
            };
            Some((name, nth))
        });
        if let Some((name, nth)) = wanted {
            if name == point && SEEN.fetch_add(1, Ordering::SeqCst) + 1 >= *nth {
                eprintln!("JETQ_TEST_FAULT: exiting at {point}");
                std::process::exit(86);
            }
        }
    }
    #[cfg(not(feature = "test-faults"))]
    let _ = point;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_follows_the_prefix_and_ids_are_checked() {
        assert_eq!(bucket(&Subjects::default()), "JETQ_BATCHES");
        assert_eq!(bucket(&Subjects::new("my-app").unwrap()), "MY_APP_BATCHES");
        assert!(validate_id("batch", "export-42_a").is_ok());
        for bad in ["", "a.b", "a b", "a*", &"x".repeat(65)] {
            assert!(validate_id("batch", bad).is_err(), "{bad:?}");
        }
    }
}
