//! Metrics history (PROTOCOL.md §15): this worker's share of each queue's per-minute record in
//! `<PREFIX>_METRICS`.
//!
//! Outcomes are counted in memory, under one mutex, by the same calls that record the
//! OpenTelemetry metrics ([`crate::telemetry::WorkerMetrics`]): a map lookup and a few additions
//! per attempt, no I/O. Every `JETQ_HISTORY_INTERVAL` (default 60 s) the counts are taken out
//! and merged into `<queue>.<minute>` by compare-and-set (read, merge, `update` with the
//! revision read, again on a conflict), so any number of workers make one record per queue and
//! minute, with one write per queue per interval per worker. The queue's depth (pending and
//! in-flight tasks, from the consumer info the worker polls for its metrics anyway) is sampled
//! into the current minute at each flush.
//!
//! Best effort: a bucket that is missing (with `JETQ_PROVISION=false`) disables the history
//! with one warning; counts that cannot be written are kept and merged at the next flush
//! (for 24 hours). A worker that is killed loses what it counted since its last flush (at most
//! one interval); a graceful stop flushes after its last task ended.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use jetq_contract::{
    metrics_history::{self, MinuteRecord},
    time, Priority, Topology,
};
use tokio_util::sync::CancellationToken;

/// Compare-and-set rounds before a flush of one record gives up until the next interval.
const MAX_ROUNDS: usize = 20;
/// The longest one record's merge may take.
const WRITE_WAIT: Duration = Duration::from_secs(10);
/// The longest a stopping worker spends on its last flush (a server that does not answer must
/// not hold up the shutdown).
const FINAL_WAIT: Duration = Duration::from_secs(5);
/// Minutes older than this are dropped instead of written (the bucket would expire them).
const KEEP_MINUTES: u64 = 24 * 60;

/// One outcome counted for the history.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Succeeded,
    Failed,
    Retried,
    Dead,
}

/// Opens (or, with provisioning, creates) the history bucket; `None` with one warning if it is
/// unavailable.
pub(crate) async fn open(
    topology: &Topology,
    provision: bool,
    interval: Duration,
) -> Option<Arc<History>> {
    let bucket = metrics_history::bucket(topology.subjects());
    let store = if provision {
        metrics_history::ensure_bucket(topology)
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
        Ok(store) => Some(Arc::new(History {
            store,
            interval,
            book: Mutex::default(),
        })),
        Err(err) => {
            tracing::warn!(
                %bucket,
                error = %err,
                "metrics history disabled: the bucket is unavailable (jetq-provision creates it)"
            );
            None
        }
    }
}

/// The counts not yet written, and where they go.
pub(crate) struct History {
    store: kv::Store,
    interval: Duration,
    book: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    queues: HashMap<String, QueueBook>,
}

#[derive(Default)]
struct QueueBook {
    /// Unwritten counts by minute.
    minutes: BTreeMap<u64, MinuteRecord>,
    /// The last depth sample of each priority level since the last flush: (pending, in flight).
    depth: [Option<(u64, u64)>; 3],
}

impl Book {
    fn queue(&mut self, queue: &str) -> &mut QueueBook {
        // Looked up by `&str` first: no allocation once the queue is known.
        if !self.queues.contains_key(queue) {
            self.queues.insert(queue.to_owned(), QueueBook::default());
        }
        self.queues
            .get_mut(queue)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }
}

impl QueueBook {
    fn minute(&mut self, queue: &str, minute: u64) -> &mut MinuteRecord {
        self.minutes
            .entry(minute)
            .or_insert_with(|| MinuteRecord::new(queue, minute))
    }
}

/// The queue without its priority level (`emails~high` → `emails`).
fn base_queue(queue: &str) -> &str {
    queue.split('~').next().unwrap_or(queue)
}

impl History {
    fn with_book<R>(&self, f: impl FnOnce(&mut Book) -> R) -> R {
        let mut book = self
            .book
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut book)
    }

    /// Counts one outcome of `queue` in the current minute.
    pub(crate) fn outcome(&self, queue: &str, outcome: Outcome) {
        let queue = base_queue(queue);
        let minute = metrics_history::minute_of(SystemTime::now());
        self.with_book(|book| {
            let record = book.queue(queue).minute(queue, minute);
            match outcome {
                Outcome::Succeeded => record.succeeded += 1,
                Outcome::Failed => record.failed += 1,
                Outcome::Retried => record.retried += 1,
                Outcome::Dead => record.dead += 1,
            }
        });
    }

    /// Counts one attempt's run time in the current minute.
    pub(crate) fn run(&self, queue: &str, took: Duration) {
        let queue = base_queue(queue);
        let minute = metrics_history::minute_of(SystemTime::now());
        self.with_book(|book| book.queue(queue).minute(queue, minute).add_run(took));
    }

    /// Keeps the latest depth of one priority level of `queue` for the next flush.
    pub(crate) fn depth(&self, queue: &str, level: Priority, pending: u64, in_flight: u64) {
        let queue = base_queue(queue);
        let index = match level {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        };
        self.with_book(|book| book.queue(queue).depth[index] = Some((pending, in_flight)));
    }

    /// Flushes every interval until `stop`, then once more.
    pub(crate) async fn run_flusher(self: Arc<Self>, stop: CancellationToken) {
        let start = tokio::time::Instant::now() + self.interval;
        let mut ticker = tokio::time::interval_at(start, self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            self.flush(&mut failing).await;
        }
        if tokio::time::timeout(FINAL_WAIT, self.flush(&mut failing))
            .await
            .is_err()
        {
            tracing::warn!("metrics history: the last counts were not written within {FINAL_WAIT:?}; they are lost");
        }
    }

    /// Takes the unwritten counts (with the depth samples in the current minute) and merges
    /// each record into the bucket; what could not be written goes back for the next flush.
    async fn flush(&self, failing: &mut bool) {
        let now = SystemTime::now();
        let minute = metrics_history::minute_of(now);
        let taken: Vec<MinuteRecord> = self.with_book(|book| {
            let mut taken = Vec::new();
            for (queue, queue_book) in &mut book.queues {
                let samples: Vec<(u64, u64)> = queue_book
                    .depth
                    .iter_mut()
                    .filter_map(Option::take)
                    .collect();
                if !samples.is_empty() {
                    let pending = samples.iter().map(|s| s.0).sum();
                    let in_flight = samples.iter().map(|s| s.1).sum();
                    queue_book
                        .minute(queue, minute)
                        .sample_depth(pending, in_flight);
                }
                taken.extend(std::mem::take(&mut queue_book.minutes).into_values());
            }
            taken
        });
        let updated_at = time::format(now);
        let mut failed = Vec::new();
        for mut record in taken {
            if record.is_empty() || record.minute + KEEP_MINUTES < minute {
                continue;
            }
            // After one failure the server is likely unreachable: keep the rest untried.
            if !failed.is_empty() {
                failed.push(record);
                continue;
            }
            record.updated_at.clone_from(&updated_at);
            let written = tokio::time::timeout(WRITE_WAIT, merge_into(&self.store, &record))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {WRITE_WAIT:?}")));
            if let Err(err) = written {
                if !*failing {
                    tracing::warn!(key = %record.key(), error = %err, "cannot write the metrics history; keeping the counts for the next flush");
                }
                *failing = true;
                failed.push(record);
            }
        }
        if failed.is_empty() {
            if *failing {
                tracing::info!("metrics history written again");
            }
            *failing = false;
            return;
        }
        self.with_book(|book| {
            for record in failed {
                let queue = record.queue.clone();
                book.queue(&queue)
                    .minute(&queue, record.minute)
                    .merge(&record);
            }
        });
    }
}

/// Merges `record` into its key by compare-and-set: create when missing, else read, merge and
/// update with the revision read; a conflict (another worker wrote in between) starts over.
pub(crate) async fn merge_into(store: &kv::Store, record: &MinuteRecord) -> Result<(), String> {
    let key = record.key();
    for _ in 0..MAX_ROUNDS {
        let entry = store.entry(key.as_str()).await.map_err(|e| e.to_string())?;
        let live = entry.filter(|entry| entry.operation == kv::Operation::Put);
        match live {
            None => {
                let value = serde_json::to_vec(record).map_err(|e| e.to_string())?;
                match store.create(key.as_str(), value.into()).await {
                    Ok(_) => return Ok(()),
                    Err(err) if err.kind() == CreateErrorKind::AlreadyExists => continue,
                    Err(err) => return Err(err.to_string()),
                }
            }
            Some(entry) => {
                // A value that does not parse (written by something else) is replaced.
                let mut merged = serde_json::from_slice::<MinuteRecord>(&entry.value)
                    .ok()
                    .filter(|current| current.queue == record.queue)
                    .unwrap_or_else(|| MinuteRecord::new(&record.queue, record.minute));
                merged.merge(record);
                let value = serde_json::to_vec(&merged).map_err(|e| e.to_string())?;
                match store
                    .update(key.as_str(), value.into(), entry.revision)
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => continue,
                    Err(err) => return Err(err.to_string()),
                }
            }
        }
    }
    Err(format!("still conflicting after {MAX_ROUNDS} rounds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_count_as_their_queue() {
        assert_eq!(base_queue("emails~high"), "emails");
        assert_eq!(base_queue("emails"), "emails");
    }

    /// The cost per attempt of the in-memory counting: an outcome and a run time under the
    /// mutex (printed; the bound only catches a gross regression on a loaded debug build).
    #[test]
    fn counting_an_attempt_costs_well_under_a_microsecond() {
        let book = Mutex::new(Book::default());
        let n = 200_000u32;
        let started = std::time::Instant::now();
        for i in 0..n {
            let queue = if i % 2 == 0 { "emails" } else { "exports" };
            let minute = metrics_history::minute_of(SystemTime::now());
            let mut book = book.lock().unwrap_or_else(|p| p.into_inner());
            let record = book.queue(queue).minute(queue, minute);
            record.succeeded += 1;
            record.add_run(Duration::from_millis(u64::from(i % 700)));
        }
        let per = started.elapsed() / n;
        println!("metrics history: {per:?} per attempt (outcome + run time)");
        assert!(per < Duration::from_micros(20), "{per:?}");
    }
}
