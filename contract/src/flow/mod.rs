//! Flow control (PROTOCOL.md §11, docs/FLOW_CONTROL.md): unique tasks, rate limits and
//! concurrency limits, cluster-wide, on JetStream KV alone.
//!
//! - [`unique`]: a producer takes a unique key in `<PREFIX>_UNIQUE` with a compare-and-set
//!   `create` before it publishes; a second enqueue while the key is held gets the holder's task
//!   id back with `duplicate: true`. Workers release the key as its scope says.
//! - [`rate`]: a token bucket per task type (or per limit key) kept as one timestamp (GCRA) in
//!   `<PREFIX>_LIMITS`, updated by compare-and-set; a task over the limit reserves its turn and
//!   is handed back until then (a hand-back, not an attempt).
//! - [`concurrency`]: slots with leases in `<PREFIX>_LIMITS`, renewed while the task runs, so a
//!   killed holder's slot comes back when its lease ends (about `ack_wait`).
//!
//! Everything here is pure (records, keys, decisions) so that every language computes the same
//! thing; the round trips live in the producer and the consumer.

pub mod concurrency;
pub mod keys;
pub mod rate;
pub mod unique;

use std::time::Duration;

pub use concurrency::ConcurrencyLimit;
pub use keys::{limit_key_header_ok, validate_limit_key, validate_unique_key};
pub use rate::RateLimit;
pub use unique::{UniqueHold, UniqueScope};

use crate::Subjects;

/// Header: the task's unique key (see [`unique`]).
pub const UNIQUE_KEY: &str = "Jetq-Unique-Key";
/// Header: the unique key's scope, `queued`, `active` or `period`.
pub const UNIQUE_SCOPE: &str = "Jetq-Unique-Scope";
/// Header: the key a worker's per-key limits partition tasks by (e.g. a tenant or user id).
pub const LIMIT_KEY: &str = "Jetq-Limit-Key";

/// The flow headers as [`HeaderName`](async_nats::header::HeaderName)s: a worker looks one up
/// on every delivery, and a `&str` name is validated and copied per lookup.
pub mod names {
    use async_nats::header::HeaderName;

    /// [`UNIQUE_KEY`](super::UNIQUE_KEY).
    pub const UNIQUE_KEY: HeaderName = HeaderName::from_static(super::UNIQUE_KEY);
    /// [`UNIQUE_SCOPE`](super::UNIQUE_SCOPE).
    pub const UNIQUE_SCOPE: HeaderName = HeaderName::from_static(super::UNIQUE_SCOPE);
    /// [`LIMIT_KEY`](super::LIMIT_KEY).
    pub const LIMIT_KEY: HeaderName = HeaderName::from_static(super::LIMIT_KEY);
}

/// Compare-and-set rounds before a writer gives up (as for status records).
pub const CAS_ROUNDS: u32 = 8;

/// Why a flow-control setting or key is unusable. Refused before anything is sent or stored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// A unique or limit key with characters the protocol does not allow.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidKey {
        /// `unique key` or `limit key`.
        what: &'static str,
        /// The key as given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A rate that is not a positive, finite number of tasks per second.
    #[error(
        "invalid rate {rate}: a rate limit must be a positive, finite number of tasks per second"
    )]
    InvalidRate {
        /// The rate as given.
        rate: f64,
    },
    /// A burst of zero tasks.
    #[error("invalid burst 0: a rate limit's burst must be at least 1 task")]
    InvalidBurst,
    /// A concurrency limit of zero.
    #[error("invalid concurrency limit 0: at least 1 task must be allowed to run")]
    InvalidConcurrency,
    /// A unique period that is zero or longer than the protocol allows.
    #[error("invalid unique period {period:?}: it must be between 1 ms and {max:?}")]
    InvalidPeriod {
        /// The period as given.
        period: Duration,
        /// The longest period allowed.
        max: Duration,
    },
    /// A scope name that is not one of the protocol's.
    #[error("unknown unique scope {0:?}: expected queued, active or period")]
    UnknownScope(String),
    /// A unique key derived from arguments names an argument the task does not have.
    #[error("cannot derive the unique key: the task's arguments have no field {field:?}")]
    MissingArgument {
        /// The missing field.
        field: String,
    },
    /// A unique key derived from arguments of a task whose arguments are not a JSON object.
    #[error("cannot derive the unique key from arguments: they are not a JSON object")]
    ArgumentsNotAnObject,
    /// A unique key on a task this producer path cannot hold it for.
    #[error("unique keys are not supported on {0}")]
    Unsupported(&'static str),
    /// A worker with limits that may not provision found no limits bucket.
    #[error(
        "task {task} on queue {queue} has limits but bucket {bucket} cannot be opened and this \
         worker may not create it (JETQ_PROVISION=false): run jetq-provision, which creates it, \
         and grant the worker's NATS user the bucket; a limit is never dropped silently \
         ({reason})"
    )]
    LimitsBucketUnavailable {
        /// The bucket.
        bucket: String,
        /// A limited type's queue.
        queue: String,
        /// A limited type.
        task: String,
        /// The server's or client's error.
        reason: String,
    },
    /// A limit registered for a task type that has no handler on this worker.
    #[error(
        "a limit is set for task {task} on queue {queue}, but the worker has no handler for it"
    )]
    LimitWithoutHandler {
        /// The queue.
        queue: String,
        /// The task type.
        task: String,
    },
}

/// The limits a worker registered for a task type, written by every worker at startup under
/// `conf.<queue>.<task>` in the limits bucket (last writer wins), so operators see them
/// (`jetq limits`). Informational: workers enforce their own registration.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LimitsConfig {
    /// The queue.
    pub queue: String,
    /// The task type.
    pub task: String,
    /// Tasks per second, if rate-limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// The rate limit's burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// The rate limit counts each limit key apart.
    #[serde(default)]
    pub rate_per_key: bool,
    /// Tasks at once, if concurrency-limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// The concurrency limit counts each limit key apart.
    #[serde(default)]
    pub concurrency_per_key: bool,
    /// When the worker wrote it.
    pub updated_at: String,
}

impl LimitsConfig {
    /// The entry of a type with these limits, stamped now.
    pub fn new(
        queue: &str,
        task: &str,
        rate: Option<RateLimit>,
        concurrency: Option<ConcurrencyLimit>,
    ) -> Self {
        LimitsConfig {
            queue: queue.to_owned(),
            task: task.to_owned(),
            rate: rate.map(|r| r.rate()),
            burst: rate.map(|r| r.burst()),
            rate_per_key: rate.is_some_and(|r| r.is_per_key()),
            concurrency: concurrency.map(|c| c.max()),
            concurrency_per_key: concurrency.is_some_and(|c| c.is_per_key()),
            updated_at: crate::time::now(),
        }
    }

    /// Its key in the limits bucket: `conf.<queue>.<task>`.
    pub fn entry(&self) -> String {
        format!("conf.{}.{}", self.queue, self.task)
    }
}

/// The unique-key bucket's name: `<PREFIX>_UNIQUE` (`JETQ_UNIQUE` by default).
pub fn unique_bucket(subjects: &Subjects) -> String {
    sibling_bucket(subjects, "UNIQUE")
}

/// The limits bucket's name: `<PREFIX>_LIMITS` (`JETQ_LIMITS` by default).
pub fn limits_bucket(subjects: &Subjects) -> String {
    sibling_bucket(subjects, "LIMITS")
}

fn sibling_bucket(subjects: &Subjects, suffix: &str) -> String {
    // Named from the upper-case prefix as the other buckets are.
    subjects
        .attempts_bucket()
        .strip_suffix("_ATTEMPTS")
        .map(|upper| format!("{upper}_{suffix}"))
        .unwrap_or_else(|| format!("JETQ_{suffix}"))
}

/// How long an entry of the limits bucket lives after its last write: every entry there is
/// rewritten while in use, and one left alone this long describes nothing current (a rate
/// bucket idle for a day is full; a slot's lease or a reservation ended long ago).
pub const LIMITS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The unique-key bucket's settings: history 1, file storage, no age limit (a key is held as
/// long as its task is queued, however long that is; workers and expiry release it).
pub fn unique_bucket_config(topology: &crate::Topology) -> async_nats::jetstream::kv::Config {
    async_nats::jetstream::kv::Config {
        bucket: unique_bucket(topology.subjects()),
        description: "jetq unique keys: <queue>.<task>.<key> -> the task holding it".into(),
        history: 1,
        storage: async_nats::jetstream::stream::StorageType::File,
        num_replicas: topology.settings().stream_replicas,
        ..Default::default()
    }
}

/// The limits bucket's settings: history 1, file storage, entries expire a day after their
/// last write ([`LIMITS_MAX_AGE`]).
pub fn limits_bucket_config(topology: &crate::Topology) -> async_nats::jetstream::kv::Config {
    async_nats::jetstream::kv::Config {
        bucket: limits_bucket(topology.subjects()),
        description: "jetq rate and concurrency limits: token buckets, slots, reservations".into(),
        history: 1,
        max_age: LIMITS_MAX_AGE,
        storage: async_nats::jetstream::stream::StorageType::File,
        num_replicas: topology.settings().stream_replicas,
        ..Default::default()
    }
}

/// Microseconds since the Unix epoch (the unit of every flow-control computation).
pub fn micros(time: std::time::SystemTime) -> i64 {
    match time.duration_since(std::time::UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_micros()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// The protocol's timestamp form of a microsecond instant.
pub fn format_micros(at: i64) -> String {
    let time = if at >= 0 {
        std::time::UNIX_EPOCH + Duration::from_micros(at.unsigned_abs())
    } else {
        std::time::UNIX_EPOCH - Duration::from_micros(at.unsigned_abs())
    };
    crate::time::format(time)
}

/// A timestamp of the protocol as microseconds; `None` when it is not a timestamp.
pub fn parse_micros(text: &str) -> Option<i64> {
    crate::time::parse(text).map(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_the_prefix() {
        assert_eq!(unique_bucket(&Subjects::default()), "JETQ_UNIQUE");
        assert_eq!(
            limits_bucket(&Subjects::new("my-app").unwrap()),
            "MY_APP_LIMITS"
        );
    }

    #[test]
    fn micros_round_trip_through_the_timestamp_form() {
        let at = 1_764_226_800_123_456;
        assert_eq!(format_micros(at), "2025-11-27T07:00:00.123456Z");
        assert_eq!(parse_micros(&format_micros(at)), Some(at));
    }
}
