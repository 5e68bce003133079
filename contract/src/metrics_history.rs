//! Metrics history (PROTOCOL.md §15): per-minute aggregates of each queue for the last 24 hours,
//! kept in the KV bucket `<PREFIX>_METRICS` under `<queue>.<minute>` (`minute` = whole minutes
//! since the Unix epoch, UTC). Workers count what they ran in memory and merge their counts into
//! the minute's record by compare-and-set once a minute ([`MinuteRecord::merge`]), so any number
//! of workers make one record per queue and minute. The console, `jetq history` and the Python
//! client's `jetq.metrics_history` read them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{kv, stream::StorageType};
use serde::{Deserialize, Serialize};

use crate::{subject::Subjects, topology::ProvisionError, Topology};

/// How long a record is kept: 24 hours plus a margin of one hour, so a full day is always there.
pub const RETENTION: Duration = Duration::from_secs(25 * 3600);

/// How often a worker merges its counts into the bucket by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Upper bounds (milliseconds, inclusive) of the run-time buckets. `run_ms_buckets[i]` counts
/// the attempts that ran at most `RUN_MS_BOUNDS[i]` ms (and more than the bound before it); the
/// last count, at index `RUN_MS_BOUNDS.len()`, those that ran longer than the last bound.
pub const RUN_MS_BOUNDS: [u64; 12] = [
    10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000,
];

/// One queue's minute: what the workers ran in it and the queue's depth.
///
/// Counts are of attempts whose outcome was recorded in that minute (the worker's clock). Every
/// field but `queue` and `minute` may be missing on the wire (zero, or no sample); readers
/// ignore fields they do not know.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteRecord {
    /// The queue (without priority level).
    pub queue: String,
    /// Whole minutes since the Unix epoch (UTC) — the key's second token.
    pub minute: u64,
    /// Attempts whose handler succeeded (tasks done).
    #[serde(default)]
    pub succeeded: u64,
    /// Attempts whose handler failed or timed out (each is then retried or dead-lettered).
    #[serde(default)]
    pub failed: u64,
    /// Failed attempts handed back for another attempt.
    #[serde(default)]
    pub retried: u64,
    /// Tasks written to the dead-letter stream.
    #[serde(default)]
    pub dead: u64,
    /// Attempts whose run time is counted below (succeeded, failed, cancelled).
    #[serde(default)]
    pub runs: u64,
    /// Sum of their run times, milliseconds.
    #[serde(default)]
    pub run_ms_sum: u64,
    /// The longest of them, milliseconds.
    #[serde(default)]
    pub run_ms_max: u64,
    /// Their run times by bucket ([`RUN_MS_BOUNDS`] plus one overflow count).
    #[serde(default)]
    pub run_ms_buckets: Vec<u64>,
    /// Tasks waiting (not yet delivered, all priority levels), the highest sample of the minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
    /// Tasks delivered and not yet acknowledged, the highest sample of the minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u64>,
    /// When the record was last written, RFC 3339 UTC.
    #[serde(default)]
    pub updated_at: String,
}

impl MinuteRecord {
    /// An empty record of `queue` and `minute`.
    pub fn new(queue: &str, minute: u64) -> Self {
        MinuteRecord {
            queue: queue.to_owned(),
            minute,
            ..Default::default()
        }
    }

    /// The record's key: `<queue>.<minute>`.
    pub fn key(&self) -> String {
        key(&self.queue, self.minute)
    }

    /// Counts one attempt's run time.
    pub fn add_run(&mut self, took: Duration) {
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        self.runs += 1;
        self.run_ms_sum = self.run_ms_sum.saturating_add(ms);
        self.run_ms_max = self.run_ms_max.max(ms);
        let index = bucket_index(ms);
        if self.run_ms_buckets.len() <= index {
            self.run_ms_buckets.resize(RUN_MS_BOUNDS.len() + 1, 0);
        }
        self.run_ms_buckets[index] += 1;
    }

    /// Takes a depth sample: the minute keeps the highest.
    pub fn sample_depth(&mut self, pending: u64, in_flight: u64) {
        self.pending = Some(self.pending.map_or(pending, |p| p.max(pending)));
        self.in_flight = Some(self.in_flight.map_or(in_flight, |p| p.max(in_flight)));
    }

    /// Merges `other` (another writer's counts of the same queue and minute) into this record:
    /// counts, sums and buckets add up (element by element, the shorter padded with zeros),
    /// `run_ms_max`, `pending` and `in_flight` keep the larger (a missing sample is no sample),
    /// `updated_at` the later. The rule is commutative and associative, so the order in which
    /// workers merge does not matter.
    pub fn merge(&mut self, other: &MinuteRecord) {
        self.succeeded = self.succeeded.saturating_add(other.succeeded);
        self.failed = self.failed.saturating_add(other.failed);
        self.retried = self.retried.saturating_add(other.retried);
        self.dead = self.dead.saturating_add(other.dead);
        self.runs = self.runs.saturating_add(other.runs);
        self.run_ms_sum = self.run_ms_sum.saturating_add(other.run_ms_sum);
        self.run_ms_max = self.run_ms_max.max(other.run_ms_max);
        if self.run_ms_buckets.len() < other.run_ms_buckets.len() {
            self.run_ms_buckets.resize(other.run_ms_buckets.len(), 0);
        }
        for (mine, theirs) in self.run_ms_buckets.iter_mut().zip(&other.run_ms_buckets) {
            *mine = mine.saturating_add(*theirs);
        }
        self.pending = max_sample(self.pending, other.pending);
        self.in_flight = max_sample(self.in_flight, other.in_flight);
        let later = match (
            crate::time::parse(&self.updated_at),
            crate::time::parse(&other.updated_at),
        ) {
            (Some(mine), Some(theirs)) => theirs > mine,
            (None, Some(_)) => true,
            _ => false,
        };
        if later {
            self.updated_at.clone_from(&other.updated_at);
        }
    }

    /// Whether the record counts nothing and has no depth sample (not worth a write).
    pub fn is_empty(&self) -> bool {
        self.succeeded == 0
            && self.failed == 0
            && self.retried == 0
            && self.dead == 0
            && self.runs == 0
            && self.pending.is_none()
            && self.in_flight.is_none()
    }

    /// The mean run time in milliseconds (`None` without runs).
    pub fn run_ms_mean(&self) -> Option<u64> {
        self.run_ms_sum.checked_div(self.runs)
    }

    /// An estimate of the `q` quantile (0.0–1.0) of the run times, in milliseconds: the upper
    /// bound of the bucket holding it, at most `run_ms_max` (`None` without runs).
    pub fn run_ms_quantile(&self, q: f64) -> Option<u64> {
        let total: u64 = self.run_ms_buckets.iter().sum();
        if total == 0 {
            return None;
        }
        // The rank of the quantile, 1-based: ceil(q × total), at least 1.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.run_ms_buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let bound = RUN_MS_BOUNDS.get(index).copied().unwrap_or(u64::MAX);
                return Some(bound.min(self.run_ms_max));
            }
        }
        Some(self.run_ms_max)
    }
}

fn max_sample(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The run-time bucket of an attempt that ran `ms` milliseconds.
pub fn bucket_index(ms: u64) -> usize {
    RUN_MS_BOUNDS
        .iter()
        .position(|bound| ms <= *bound)
        .unwrap_or(RUN_MS_BOUNDS.len())
}

/// The metrics-history bucket of an installation: `<PREFIX>_METRICS`.
pub fn bucket(subjects: &Subjects) -> String {
    subjects
        .attempts_bucket()
        .strip_suffix("_ATTEMPTS")
        .map(|upper| format!("{upper}_METRICS"))
        .unwrap_or_else(|| "JETQ_METRICS".to_owned())
}

/// The key of `queue`'s record of `minute`: `<queue>.<minute>`.
pub fn key(queue: &str, minute: u64) -> String {
    format!("{queue}.{minute}")
}

/// The queue and minute of a key; `None` for a key that is not `<queue>.<minute>`.
pub fn parse_key(key: &str) -> Option<(&str, u64)> {
    let (queue, minute) = key.split_once('.')?;
    if queue.is_empty() || minute.is_empty() || !minute.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((queue, minute.parse().ok()?))
}

/// The minute (whole minutes since the Unix epoch) of an instant; 0 before the epoch.
pub fn minute_of(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs() / 60)
        .unwrap_or(0)
}

/// The instant a minute starts.
pub fn minute_start(minute: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(minute.saturating_mul(60))
}

/// The bucket's settings: history 1, `max_age` [`RETENTION`], file storage (the history
/// survives a server restart), at most 256 MiB.
pub fn bucket_config(topology: &Topology) -> kv::Config {
    kv::Config {
        bucket: bucket(topology.subjects()),
        description: "jetq metrics history: <queue>.<minute> -> what the workers ran that minute"
            .into(),
        history: 1,
        max_age: RETENTION,
        storage: StorageType::File,
        num_replicas: topology.settings().stream_replicas,
        max_bytes: 256 * 1024 * 1024,
        ..Default::default()
    }
}

/// Creates the metrics-history bucket where it is missing (idempotent).
pub async fn ensure_bucket(topology: &Topology) -> Result<kv::Store, ProvisionError> {
    topology.ensure_bucket(bucket_config(topology)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys() {
        assert_eq!(bucket(&Subjects::default()), "JETQ_METRICS");
        assert_eq!(key("emails", 29_433_600), "emails.29433600");
        assert_eq!(parse_key("emails.29433600"), Some(("emails", 29_433_600)));
        assert_eq!(parse_key("emails"), None);
        assert_eq!(parse_key("emails.12x"), None);
        assert_eq!(parse_key(".12"), None);
        assert_eq!(minute_of(UNIX_EPOCH + Duration::from_secs(125)), 2);
        assert_eq!(minute_start(2), UNIX_EPOCH + Duration::from_secs(120));
    }

    #[test]
    fn runs_fall_in_their_buckets_and_quantiles_follow() {
        let mut record = MinuteRecord::new("q", 1);
        for ms in [5, 10, 11, 40, 400, 400, 400, 400, 400, 900_000] {
            record.add_run(Duration::from_millis(ms));
        }
        assert_eq!(record.runs, 10);
        assert_eq!(record.run_ms_max, 900_000);
        assert_eq!(record.run_ms_buckets.len(), RUN_MS_BOUNDS.len() + 1);
        assert_eq!(record.run_ms_buckets[0], 2);
        assert_eq!(record.run_ms_buckets[1], 2);
        assert_eq!(record.run_ms_buckets[4], 5);
        assert_eq!(record.run_ms_buckets[12], 1);
        assert_eq!(record.run_ms_quantile(0.5), Some(500));
        assert_eq!(record.run_ms_quantile(0.95), Some(900_000));
        assert_eq!(record.run_ms_mean(), Some(90_206));
        assert_eq!(MinuteRecord::new("q", 1).run_ms_quantile(0.5), None);
    }

    #[test]
    fn merging_adds_counts_and_keeps_the_larger_samples_in_any_order() {
        let mut a = MinuteRecord::new("q", 7);
        a.succeeded = 3;
        a.add_run(Duration::from_millis(20));
        a.sample_depth(10, 2);
        a.updated_at = "2026-12-07T10:00:30.000000Z".into();
        let mut b = MinuteRecord::new("q", 7);
        b.failed = 2;
        b.retried = 1;
        b.dead = 1;
        b.add_run(Duration::from_millis(700));
        b.sample_depth(4, 5);
        b.updated_at = "2026-12-07T10:00:50.000000Z".into();
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!((ab.succeeded, ab.failed, ab.retried, ab.dead), (3, 2, 1, 1));
        assert_eq!((ab.runs, ab.run_ms_sum, ab.run_ms_max), (2, 720, 700));
        assert_eq!((ab.pending, ab.in_flight), (Some(10), Some(5)));
        assert_eq!(ab.updated_at, "2026-12-07T10:00:50.000000Z");
        let mut empty = MinuteRecord::new("q", 7);
        assert!(empty.is_empty());
        empty.merge(&a);
        assert_eq!(empty.pending, Some(10));
    }
}
