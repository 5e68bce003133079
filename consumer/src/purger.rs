//! The purger of a Limits task stream (`JETQ_TASK_RETENTION=limits`, docs/DURABLE_DRAIN.md).
//!
//! On a WorkQueue stream the server deletes a task when it is acked, and under
//! `sync_interval: always` every deletion is a write and an fsync: the drain is bound to the
//! disk's fsync rate. On a Limits stream an ack only moves the durable's ack floor, in memory,
//! and this loop removes each queue's finished tasks in bulk: every `JETQ_PURGE_INTERVAL` it
//! purges, per priority level, the level's tasks below its durable's ack floor — one write and
//! one fsync per purge, whatever the number of tasks.
//!
//! Two rules keep every task that is not finished:
//!
//! - **Only below a floor one interval old.** The floor can jump past a task whose deliveries
//!   ran out (the server moves it up once the durable's pending list empties) a moment before
//!   that task's `MAX_DELIVERIES` advisory is stored. Purging below the floor read on the
//!   previous tick gives the advisory that interval to arrive.
//! - **Never at or above an unswept advisory.** A task whose deliveries ran out is below the
//!   floor but not finished: the sweeper still has to copy it to the dead letters. The advisory
//!   stream keeps what the sweeper has not acked, so the purge stops below the lowest task
//!   sequence those advisories name.
//!
//! Several workers purge the same queue harmlessly: a purge below a floor that others already
//! purged finds nothing, costs two requests and no disk write.

use std::{collections::HashMap, time::Duration};

use async_nats::jetstream::{
    consumer::PullConsumer,
    stream::{RawMessageErrorKind, Stream},
};
use jetq_contract::{Priority, Subjects};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// The most unswept advisories read per durable and tick: the clamp uses the lowest of them.
/// More than this many stranded tasks of one durable means the sweeper is not running; the
/// purge then stops below the lowest one read, which is still safe.
const MAX_ADVISORIES_READ: usize = 256;

/// The field of a `MAX_DELIVERIES` advisory the clamp needs.
#[derive(Debug, Deserialize)]
struct StrandedTask {
    stream_seq: u64,
}

/// One priority level of one queue: its durable and the subject filter of its tasks.
pub(crate) struct PurgedLevel {
    pub(crate) queue: String,
    pub(crate) level: Priority,
    pub(crate) consumer: PullConsumer,
}

/// Purges finished tasks of the levels it serves, every `interval`.
pub(crate) struct Purger {
    pub(crate) levels: Vec<PurgedLevel>,
    pub(crate) tasks: Stream,
    /// The advisory stream (`<PREFIX>_ADVISORIES`): without it no purge is safe.
    pub(crate) advisories: Stream,
    pub(crate) subjects: Subjects,
    pub(crate) interval: Duration,
}

impl Purger {
    pub(crate) async fn run(self, stop: CancellationToken) {
        // The floor each durable had on the previous tick, and how far it was purged.
        let mut previous: HashMap<String, u64> = HashMap::new();
        let mut purged_to: HashMap<String, u64> = HashMap::new();
        loop {
            // Jittered, so that the workers of a queue do not all purge at the same moment.
            let jitter = 0.9 + 0.2 * rand_unit();
            tokio::select! {
                _ = tokio::time::sleep(self.interval.mul_f64(jitter)) => {}
                _ = stop.cancelled() => return,
            }
            for index in 0..self.levels.len() {
                let durable = self
                    .subjects
                    .durable_at(&self.levels[index].queue, self.levels[index].level);
                let floor = match self.levels[index].consumer.get_info().await {
                    Ok(info) => info.ack_floor.stream_sequence,
                    Err(err) => {
                        tracing::debug!(%durable, error = %err, "purger: cannot read the durable's ack floor");
                        continue;
                    }
                };
                let Some(older) = previous.insert(durable.clone(), floor) else {
                    continue;
                };
                // Tasks with sequence < point are removed: everything up to the older floor.
                let mut point = older.saturating_add(1).min(floor.saturating_add(1));
                match self.lowest_unswept(&durable).await {
                    Ok(Some(stranded)) => point = point.min(stranded),
                    Ok(None) => {}
                    // Not knowing what is stranded, purging could remove a task before the
                    // sweeper copies it: skip this tick.
                    Err(()) => continue,
                }
                if purged_to.get(&durable).is_some_and(|done| *done >= point) || point <= 1 {
                    continue;
                }
                let level = &self.levels[index];
                let filter = self.subjects.queue_filter_at(&level.queue, level.level);
                match self.tasks.purge().filter(filter).sequence(point).await {
                    Ok(response) => {
                        purged_to.insert(durable.clone(), point);
                        if response.purged > 0 {
                            tracing::trace!(%durable, below = point, purged = response.purged, "purged finished tasks");
                        }
                    }
                    Err(err) => {
                        tracing::warn!(%durable, error = %err, "purger: cannot purge finished tasks");
                    }
                }
            }
        }
    }

    /// The lowest task-stream sequence named by an advisory of `durable` that the sweeper has
    /// not acked yet (`None`: there is none), or `Err` if the advisory stream could not be read.
    async fn lowest_unswept(&self, durable: &str) -> Result<Option<u64>, ()> {
        let subject = format!("{}.{durable}", advisory_prefix(&self.subjects));
        let mut lowest: Option<u64> = None;
        let mut from = 1;
        for _ in 0..MAX_ADVISORIES_READ {
            let message = match self
                .advisories
                .get_first_raw_message_by_subject(&subject, from)
                .await
            {
                Ok(message) => message,
                Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => break,
                Err(err) => {
                    tracing::warn!(%durable, error = %err, "purger: cannot read the unswept advisories; not purging this time");
                    return Err(());
                }
            };
            if let Ok(stranded) = serde_json::from_slice::<StrandedTask>(&message.payload) {
                lowest = Some(lowest.map_or(stranded.stream_seq, |l| l.min(stranded.stream_seq)));
            }
            from = message.sequence + 1;
        }
        Ok(lowest)
    }
}

/// `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<tasks stream>`: the advisory subject without
/// its durable token.
fn advisory_prefix(subjects: &Subjects) -> String {
    let all = subjects.max_deliveries_advisory();
    all.strip_suffix(".*").unwrap_or(&all).to_owned()
}

/// A number in [0, 1) that differs between processes and ticks (no `rand` dependency for one
/// jitter: the clock's nanoseconds are enough to spread workers apart).
fn rand_unit() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advisory_prefix_drops_the_durable_wildcard() {
        assert_eq!(
            advisory_prefix(&Subjects::default()),
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.JETQ_TASKS"
        );
    }

    #[test]
    fn jitter_stays_in_its_range() {
        for _ in 0..100 {
            let unit = rand_unit();
            assert!((0.0..1.0).contains(&unit));
        }
    }
}
