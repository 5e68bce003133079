//! Worker presence (PROTOCOL.md §14): every worker process keeps one record in the KV bucket
//! `<PREFIX>_WORKERS` under its worker id — host, pid, version, queues, concurrency and the
//! tasks it runs now — rewritten every `JETQ_PRESENCE_INTERVAL` (default 10 s) and deleted when
//! it stops gracefully. The bucket's `max_age` (3 × the default interval) removes the record of
//! a worker that was killed. Readers (`jetq workers`, the console, the Python client's
//! `jetq.workers`) list the bucket's keys and read each value; they ignore fields they do not
//! know and a value that does not parse.

use std::time::Duration;

use async_nats::jetstream::{kv, stream::StorageType};
use serde::{Deserialize, Serialize};

use crate::{subject::Subjects, topology::ProvisionError, Topology};

/// How often a worker rewrites its record by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// The bucket's `max_age`: a record not rewritten for three default intervals is gone.
pub const BUCKET_MAX_AGE: Duration = Duration::from_secs(30);

/// The most running tasks a record lists; `running_count` counts all of them.
pub const MAX_RUNNING: usize = 100;

/// One worker process: the value of its key in `<PREFIX>_WORKERS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// The worker id, also the key: `<host>-<pid>-<ULID>`.
    pub id: String,
    /// The host name (the pod name in Kubernetes).
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// The jetq version the worker runs (its crate version for Rust workers).
    pub version: String,
    /// The installation's prefix.
    pub prefix: String,
    /// The queues it pulls (without priority levels).
    pub queues: Vec<String>,
    /// Tasks of each queue it runs at once at most.
    pub concurrency: u32,
    /// When the process started pulling, RFC 3339 UTC.
    pub started_at: String,
    /// When this record was written, RFC 3339 UTC.
    pub heartbeat_at: String,
    /// The tasks it runs now, oldest first, at most [`MAX_RUNNING`].
    #[serde(default)]
    pub running: Vec<RunningTask>,
    /// How many tasks it runs now (may exceed `running.len()`).
    #[serde(default)]
    pub running_count: u64,
}

/// One task a worker runs now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningTask {
    /// The task id.
    pub id: String,
    /// Its queue (without level).
    pub queue: String,
    /// Its task type.
    pub task: String,
    /// Its sequence in the task stream (0 if unknown).
    #[serde(default)]
    pub sequence: u64,
    /// When this attempt started, RFC 3339 UTC.
    pub started_at: String,
    /// The attempt number, 1-based.
    pub attempt: u32,
    /// The batch the task is a member of (its `Jetq-Batch` header), if any (1.11; absent in
    /// older records). Batch status counts a member listed here as running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
}

/// The members of one batch that live workers run now, by member id (a replay's id mapped to
/// the original task id), from the workers' records: a member listed by two records (a
/// redelivery while the first worker's record has not expired yet) counts once, under the
/// record written last. Members in `finished` (they have a marker) are left out.
pub fn running_members<'a>(
    records: &'a [WorkerRecord],
    batch: &str,
    finished: &std::collections::HashSet<&str>,
) -> std::collections::BTreeMap<String, (&'a WorkerRecord, &'a RunningTask)> {
    let mut members: std::collections::BTreeMap<String, (&WorkerRecord, &RunningTask)> =
        std::collections::BTreeMap::new();
    for record in records {
        for task in &record.running {
            if task.batch.as_deref() != Some(batch) {
                continue;
            }
            let member = crate::workflow::batch::member_id(&task.id);
            if finished.contains(member) {
                continue;
            }
            let newer = members
                .get(member)
                .is_none_or(|(seen, _)| seen.heartbeat_at < record.heartbeat_at);
            if newer {
                members.insert(member.to_owned(), (record, task));
            }
        }
    }
    members
}

/// Every worker record of the installation (a value that does not parse is skipped); none when
/// the bucket does not exist. One key listing and one get per worker.
pub async fn read_records(
    js: &async_nats::jetstream::Context,
    subjects: &Subjects,
) -> Result<Vec<WorkerRecord>, String> {
    use futures::TryStreamExt;
    let bucket = bucket(subjects);
    let store = match js.get_key_value(&bucket).await {
        Ok(store) => store,
        Err(err) if err.kind() == async_nats::jetstream::context::KeyValueErrorKind::GetBucket => {
            return Ok(Vec::new())
        }
        Err(err) => return Err(format!("cannot open bucket {bucket}: {err}")),
    };
    let keys: Vec<String> = store
        .keys()
        .await
        .map_err(|err| format!("cannot list bucket {bucket}: {err}"))?
        .try_collect()
        .await
        .map_err(|err| format!("cannot list bucket {bucket}: {err}"))?;
    let mut records = Vec::with_capacity(keys.len());
    for key in keys {
        match store.get(&key).await {
            Ok(Some(value)) => match serde_json::from_slice::<WorkerRecord>(&value) {
                Ok(record) => records.push(record),
                Err(err) => tracing::debug!(%key, error = %err, "unreadable worker record"),
            },
            Ok(None) => {}
            Err(err) => return Err(format!("cannot read worker {key}: {err}")),
        }
    }
    Ok(records)
}

/// The presence bucket of an installation: `<PREFIX>_WORKERS`.
pub fn bucket(subjects: &Subjects) -> String {
    subjects
        .attempts_bucket()
        .strip_suffix("_ATTEMPTS")
        .map(|upper| format!("{upper}_WORKERS"))
        .unwrap_or_else(|| "JETQ_WORKERS".to_owned())
}

/// A worker id: `<host>-<pid>-<ULID>`, the host's characters outside `[A-Za-z0-9_-]` replaced
/// by `_` (a key is one subject token), cut to 64 characters.
pub fn worker_id(host: &str, pid: u32, ulid: &str) -> String {
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let host = if host.is_empty() {
        "unknown".into()
    } else {
        host
    };
    format!("{host}-{pid}-{ulid}")
}

/// The host name: `$HOSTNAME`, else `/proc/sys/kernel/hostname`, else `unknown`.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The presence bucket's settings: history 1, `max_age` [`BUCKET_MAX_AGE`], memory storage
/// (presence is worth nothing after a restart of the server).
pub fn bucket_config(topology: &Topology) -> kv::Config {
    kv::Config {
        bucket: bucket(topology.subjects()),
        description: "jetq worker presence: <worker id> -> the live worker and its running tasks"
            .into(),
        history: 1,
        max_age: BUCKET_MAX_AGE,
        storage: StorageType::Memory,
        num_replicas: topology.settings().stream_replicas,
        max_bytes: 64 * 1024 * 1024,
        ..Default::default()
    }
}

/// Creates the presence bucket where it is missing (idempotent).
pub async fn ensure_bucket(topology: &Topology) -> Result<kv::Store, ProvisionError> {
    topology.ensure_bucket(bucket_config(topology)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_follows_the_prefix() {
        assert_eq!(bucket(&Subjects::default()), "JETQ_WORKERS");
    }

    #[test]
    fn a_worker_id_is_one_token() {
        assert_eq!(
            worker_id("web-1.example.com", 42, "01J9ZQ5W3V7ZB4M8K2N6P0R1S3"),
            "web-1_example_com-42-01J9ZQ5W3V7ZB4M8K2N6P0R1S3"
        );
        assert_eq!(worker_id("", 1, "X"), "unknown-1-X");
    }
}
