//! The task-type catalog (PROTOCOL.md, "Task-type catalog"): workers publish the task types
//! they handle — name, queue, attempts, timeout, whether their status is tracked — so that
//! producers in any language, the CLI and the dashboard know them without sharing code.
//!
//! A KV bucket `<PREFIX>_CATALOG` (created by provisioning like the other buckets), one entry
//! per type under the key `<queue>.<task>`, written by every worker at startup (last writer
//! wins: workers of one deployment agree). Its value is a JSON [`CatalogEntry`]. Readers treat
//! a missing bucket or entry as "unknown": nothing changes for them.

use std::time::Duration;

use async_nats::jetstream::{kv, stream::StorageType};
use serde::{Deserialize, Serialize};

use crate::{subject::Subjects, topology::ProvisionError, Topology};

/// One task type as a worker handles it: the value of the catalog entry `<queue>.<task>`.
/// Readers ignore fields they do not know (later versions may add some).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// The queue the type's tasks go to.
    pub queue: String,
    /// The task type's wire name.
    pub task: String,
    /// Attempts before a task is dead-lettered, counting the first.
    pub max_attempts: u32,
    /// Limit on one attempt, in milliseconds.
    pub timeout_ms: u64,
    /// Whether tasks of this type get a status record: producers that find `true` write the
    /// queued record (and callers may wait on the task) as if the caller asked to track it.
    pub tracked: bool,
    /// When the worker wrote the entry (RFC 3339, UTC).
    pub updated_at: String,
}

impl CatalogEntry {
    /// The entry of a type with these options, stamped now.
    pub fn new(queue: &str, task: &str, options: &crate::TaskOptions) -> CatalogEntry {
        CatalogEntry {
            queue: queue.to_owned(),
            task: task.to_owned(),
            max_attempts: options.max_attempts,
            timeout_ms: u64::try_from(options.timeout.as_millis()).unwrap_or(u64::MAX),
            tracked: options.track_status,
            updated_at: crate::time::now(),
        }
    }

    /// The attempt timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Its key in the catalog bucket.
    pub fn key(&self) -> String {
        key(&self.queue, &self.task)
    }
}

/// The catalog key of a task type: `<queue>.<task>`.
pub fn key(queue: &str, task: &str) -> String {
    format!("{queue}.{task}")
}

/// The catalog bucket's name: `<PREFIX>_CATALOG` (`JETQ_CATALOG` by default).
pub fn bucket(subjects: &Subjects) -> String {
    // The other buckets are named from the upper-case prefix the same way.
    subjects
        .attempts_bucket()
        .strip_suffix("_ATTEMPTS")
        .map(|upper| format!("{upper}_CATALOG"))
        .unwrap_or_else(|| "JETQ_CATALOG".to_owned())
}

/// The catalog bucket's settings: one revision per key, file storage, the streams' replicas.
pub fn bucket_config(topology: &Topology) -> kv::Config {
    kv::Config {
        bucket: bucket(topology.subjects()),
        description: "jetq task-type catalog: <queue>.<task> -> the type as its workers run it"
            .into(),
        history: 1,
        storage: StorageType::File,
        num_replicas: topology.settings().stream_replicas,
        max_bytes: 16 * 1024 * 1024,
        ..Default::default()
    }
}

/// Creates the catalog bucket where it is missing (idempotent), as provisioning does for the
/// other buckets.
pub async fn ensure_bucket(topology: &Topology) -> Result<kv::Store, ProvisionError> {
    topology.ensure_bucket(bucket_config(topology)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_follows_the_prefix() {
        assert_eq!(bucket(&Subjects::default()), "JETQ_CATALOG");
    }

    #[test]
    fn an_entry_carries_the_options() {
        let options = crate::TaskOptions::default()
            .max_attempts(5)
            .timeout(Duration::from_secs(30))
            .track_status(true);
        let entry = CatalogEntry::new("emails", "send_email", &options);
        assert_eq!(entry.key(), "emails.send_email");
        assert_eq!(entry.timeout_ms, 30_000);
        assert!(entry.tracked);
        assert!(crate::time::parse(&entry.updated_at).is_some());
    }
}
