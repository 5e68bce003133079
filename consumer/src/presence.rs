//! Worker presence (PROTOCOL.md §14): this process's record in `<PREFIX>_WORKERS` — who it is,
//! what it pulls and which tasks it runs now — rewritten every `JETQ_PRESENCE_INTERVAL` and
//! deleted when the worker stops gracefully. The running tasks come from the stall watch, which
//! already holds every attempt while its handler runs.
//!
//! Presence is best effort: a bucket that is missing (with `JETQ_PROVISION=false`) or cannot be
//! written disables it with one warning; the worker runs as before.
//!
//! While presence runs, the worker also answers cancel requests for its running tasks under the
//! same worker id (worker control, PROTOCOL.md §16, [`crate::control`]).

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use async_nats::jetstream::kv;
use jetq_contract::{
    presence::{self, RunningTask, WorkerRecord, MAX_RUNNING},
    time, Topology,
};
use tokio_util::sync::CancellationToken;

use crate::stall::StallWatch;

/// The longest a stopping worker waits to delete its record.
const DELETE_WAIT: Duration = Duration::from_secs(2);

/// The presence bucket's `max_age` for a worker that rewrites its record every `interval`:
/// three intervals, at least 3 s.
pub(crate) fn max_age(interval: Duration) -> Duration {
    (interval * 3).max(Duration::from_secs(3))
}

/// Opens (or, with provisioning, creates) the presence bucket; `None` with one warning if it
/// is unavailable.
pub(crate) async fn open(
    topology: &Topology,
    provision: bool,
    interval: Duration,
) -> Option<kv::Store> {
    let bucket = presence::bucket(topology.subjects());
    let store = if provision {
        let mut config = presence::bucket_config(topology);
        config.max_age = max_age(interval);
        topology
            .ensure_bucket(config)
            .await
            .map_err(|err| err.to_string())
    } else {
        topology
            .jetstream()
            .get_key_value(bucket.clone())
            .await
            .map_err(|err| err.to_string())
    };
    match store {
        Ok(store) => Some(store),
        Err(err) => {
            tracing::warn!(
                %bucket,
                error = %err,
                "worker presence disabled: the bucket is unavailable (jetq-provision creates it)"
            );
            None
        }
    }
}

/// This worker's presence: its record's fixed part and where it is written.
pub(crate) struct Presence {
    pub(crate) store: kv::Store,
    pub(crate) interval: Duration,
    pub(crate) prefix: String,
    pub(crate) queues: Vec<String>,
    pub(crate) concurrency: usize,
    /// Answers worker control requests (§16) under this worker's id while presence runs.
    pub(crate) client: async_nats::Client,
}

impl Presence {
    /// Writes the record now and every interval until `stop`, then deletes it.
    pub(crate) async fn run(self, stall: Arc<StallWatch>, stop: CancellationToken) {
        let pid = std::process::id();
        let id = presence::worker_id(&presence::host_name(), pid, &ulid::Ulid::new().to_string());
        let started_at = time::format(SystemTime::now());
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        tracing::debug!(worker_id = %id, "worker presence on");
        let control = tokio::spawn(crate::control::serve(
            self.client.clone(),
            self.prefix.clone(),
            id.clone(),
            stall.clone(),
            stop.clone(),
        ));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let running = stall.running();
            let record = WorkerRecord {
                id: id.clone(),
                host: presence::host_name(),
                pid,
                version: env!("CARGO_PKG_VERSION").to_owned(),
                prefix: self.prefix.clone(),
                queues: self.queues.clone(),
                concurrency: u32::try_from(self.concurrency).unwrap_or(u32::MAX),
                started_at: started_at.clone(),
                heartbeat_at: time::format(SystemTime::now()),
                running_count: running.len() as u64,
                running: running
                    .into_iter()
                    .take(MAX_RUNNING)
                    .map(|attempt| RunningTask {
                        id: attempt.id.to_string(),
                        queue: attempt.queue.to_string(),
                        task: attempt.task.to_string(),
                        sequence: attempt.sequence,
                        started_at: time::format(attempt.started_at),
                        attempt: attempt.attempt,
                        batch: attempt.batch.map(|batch| batch.to_string()),
                    })
                    .collect(),
            };
            // Bounded by the interval, so a server that does not answer never holds up the
            // loop (or the shutdown that waits for it).
            let written = match serde_json::to_vec(&record) {
                Ok(value) => {
                    match tokio::time::timeout(self.interval, self.store.put(&id, value.into()))
                        .await
                    {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(err)) => Err(err.to_string()),
                        Err(_) => Err(format!("no answer within {:?}", self.interval)),
                    }
                }
                Err(err) => Err(err.to_string()),
            };
            match written {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(worker_id = %id, "worker presence written again");
                }
                Ok(()) => {}
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(worker_id = %id, error = %err, "cannot write worker presence; retrying each interval");
                }
                Err(err) => tracing::debug!(worker_id = %id, error = %err, "worker presence"),
            }
        }
        let _ = control.await;
        match tokio::time::timeout(DELETE_WAIT, self.store.delete(&id)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(worker_id = %id, error = %err, "cannot delete worker presence; it expires by itself")
            }
            Err(_) => {
                tracing::warn!(worker_id = %id, "worker presence not deleted in time; it expires by itself")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_outlive_two_missed_writes() {
        assert_eq!(max_age(Duration::from_secs(10)), Duration::from_secs(30));
        assert_eq!(max_age(Duration::from_millis(200)), Duration::from_secs(3));
    }
}
