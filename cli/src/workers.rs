//! Live worker processes (PROTOCOL.md §14): each worker keeps a record in `<PREFIX>_WORKERS`
//! with its host, version, queues, concurrency and the tasks it runs now, rewritten every
//! `JETQ_PRESENCE_INTERVAL` and gone when it stops (deleted) or dies (expired).

use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
pub use jetq_contract::presence::{RunningTask, WorkerRecord};
use serde::Serialize;

use crate::{error::AdminError, Admin};

/// One live worker as `jetq workers` and the console show it: the record plus ages computed
/// when it was read.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    /// The record as the worker wrote it.
    #[serde(flatten)]
    pub record: WorkerRecord,
    /// Seconds since `heartbeat_at` when it was read (`null` if the time does not parse).
    pub heartbeat_age_secs: Option<f64>,
    /// Per running task (same order as `record.running`): seconds since it started.
    pub running_for_secs: Vec<Option<f64>>,
}

fn age(at: &str, now: SystemTime) -> Option<f64> {
    let then = jetq_contract::time::parse(at)?;
    Some(
        now.duration_since(then)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64(),
    )
}

impl WorkerView {
    fn new(record: WorkerRecord, now: SystemTime) -> WorkerView {
        WorkerView {
            heartbeat_age_secs: age(&record.heartbeat_at, now),
            running_for_secs: record
                .running
                .iter()
                .map(|task| age(&task.started_at, now))
                .collect(),
            record,
        }
    }
}

impl Admin {
    /// The live workers, by host then id. An installation without the presence bucket (no
    /// worker with presence ever ran, or not provisioned) has none. A record that does not
    /// parse is skipped with a warning.
    pub async fn workers(&self) -> Result<Vec<WorkerView>, AdminError> {
        let bucket = jetq_contract::presence::bucket(self.subjects());
        let Some(store) = self.optional_bucket(&bucket).await? else {
            return Ok(Vec::new());
        };
        let keys: Vec<String> = match store.keys().await {
            Ok(keys) => keys
                .try_collect()
                .await
                .map_err(|err| AdminError::nats(format!("cannot list bucket {bucket}"), err))?,
            Err(err) => {
                return Err(AdminError::nats(
                    format!("cannot list bucket {bucket}"),
                    err,
                ))
            }
        };
        let now = SystemTime::now();
        let mut workers = Vec::new();
        for key in keys {
            let value = store
                .get(&key)
                .await
                .map_err(|err| AdminError::nats(format!("cannot read worker {key}"), err))?;
            // Deleted (stopped) or expired between the listing and the read.
            let Some(value) = value else { continue };
            match serde_json::from_slice::<WorkerRecord>(&value) {
                Ok(record) => workers.push(WorkerView::new(record, now)),
                Err(err) => tracing::warn!(%key, error = %err, "unreadable worker record skipped"),
            }
        }
        workers.sort_by(|a, b| {
            (a.record.host.as_str(), a.record.id.as_str())
                .cmp(&(b.record.host.as_str(), b.record.id.as_str()))
        });
        Ok(workers)
    }

    /// A KV bucket by name, `None` if it does not exist.
    pub(crate) async fn optional_bucket(
        &self,
        bucket: &str,
    ) -> Result<Option<async_nats::jetstream::kv::Store>, AdminError> {
        match self.optional_stream(&format!("KV_{bucket}")).await? {
            None => Ok(None),
            Some(_) => self
                .jetstream()
                .get_key_value(bucket)
                .await
                .map(Some)
                .map_err(|err| AdminError::nats(format!("cannot open bucket {bucket}"), err)),
        }
    }
}
