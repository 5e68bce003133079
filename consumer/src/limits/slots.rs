//! Concurrency slots in the limits bucket: taken and released with compare-and-set writes of
//! one entry per limit, leases renewed while the task runs.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv;
use jetq_contract::flow::{
    self,
    concurrency::{Acquire, Slots},
    ConcurrencyLimit,
};
use tokio::task::JoinHandle;

use super::{
    locks::{self, EntryLocks},
    FlowTask,
};

/// Whether a slot was taken.
pub(super) enum Taken {
    Yes,
    No { retry_in: Duration },
}

fn now() -> i64 {
    flow::micros(SystemTime::now())
}

fn lease_micros(lease: Duration) -> i64 {
    i64::try_from(lease.as_micros()).unwrap_or(i64::MAX)
}

/// Writes `change(slots)` to `entry` with compare-and-set (see [`locks::modify`]).
async fn modify<T>(
    store: &kv::Store,
    entry: &str,
    entry_locks: &EntryLocks,
    mut change: impl FnMut(&Slots) -> (Option<Slots>, T),
) -> Result<T, String> {
    locks::modify(store, entry, entry_locks, |value| {
        let slots = value.map(Slots::from_json).unwrap_or_default();
        let (write, answer) = change(&slots);
        (write.map(|slots| slots.to_json()), answer)
    })
    .await
}

/// Takes a slot of `limit` for the task, or says when to try again.
pub(super) async fn acquire(
    store: &kv::Store,
    entry: &str,
    limit: ConcurrencyLimit,
    task: &FlowTask<'_>,
    lease: Duration,
    entry_locks: &EntryLocks,
) -> Taken {
    let mut full_until = None;
    let result = modify(store, entry, entry_locks, |slots| {
        let now = now();
        match slots.acquire(
            limit.max(),
            task.sequence,
            task.id,
            now,
            now.saturating_add(lease_micros(lease)),
        ) {
            Acquire::Taken(slots) => (Some(slots), true),
            Acquire::Full { earliest_end } => {
                full_until = Some(earliest_end - now);
                (None, false)
            }
        }
    })
    .await;
    match result {
        Ok(true) => Taken::Yes,
        Ok(false) => {
            let earliest = Duration::from_micros(full_until.unwrap_or(0).max(0).unsigned_abs());
            Taken::No {
                retry_in: super::slot_wait(task.delivered, earliest, lease),
            }
        }
        Err(err) => {
            // The limit cannot be checked: wait rather than run over it.
            tracing::warn!(entry, error = %err, "could not take a concurrency slot; the task waits");
            Taken::No {
                retry_in: super::slot_wait(task.delivered, lease, lease),
            }
        }
    }
}

/// Notes (a plain `put` of `wait.<sequence>`) that the task waits for a slot of `entry` until
/// it comes back, so operators see what waits on a limit. Best effort.
pub(super) async fn note_waiting(
    store: &kv::Store,
    entry: &str,
    sequence: u64,
    retry_in: Duration,
) {
    let until = now().saturating_add(i64::try_from(retry_in.as_micros()).unwrap_or(i64::MAX));
    let waiting = jetq_contract::flow::concurrency::Waiting {
        limit: entry.to_owned(),
        until: flow::format_micros(until),
    };
    let written = match serde_json::to_vec(&waiting) {
        Ok(bytes) => store
            .put(flow::keys::waiting_entry(sequence), bytes.into())
            .await
            .err()
            .map(|err| err.to_string()),
        Err(err) => Some(err.to_string()),
    };
    if let Some(err) = written {
        tracing::debug!(entry, error = %err, "could not note a waiting task");
    }
}

/// A slot held by a running task, its lease renewed in the background until released.
pub(super) struct HeldSlot {
    store: kv::Store,
    entry_locks: EntryLocks,
    entry: String,
    sequence: u64,
    renewal: JoinHandle<()>,
}

impl HeldSlot {
    pub(super) fn renewing(
        store: kv::Store,
        entry: String,
        limit: ConcurrencyLimit,
        sequence: u64,
        task_id: String,
        lease: Duration,
        entry_locks: EntryLocks,
    ) -> HeldSlot {
        let renewal = {
            let (store, entry) = (store.clone(), entry.clone());
            let entry_locks = entry_locks.clone();
            tokio::spawn(async move {
                let every = lease / 3;
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    let renewed = modify(&store, &entry, &entry_locks, |slots| {
                        let now = now();
                        let until = now.saturating_add(lease_micros(lease));
                        match slots.acquire(limit.max(), sequence, &task_id, now, until) {
                            Acquire::Taken(slots) => (Some(slots), ()),
                            Acquire::Full { .. } => (None, ()),
                        }
                    })
                    .await;
                    if let Err(err) = renewed {
                        tracing::warn!(entry, error = %err, "could not renew a concurrency slot's lease");
                    }
                }
            })
        };
        HeldSlot {
            store,
            entry_locks,
            entry,
            sequence,
            renewal,
        }
    }

    /// Stops renewing and frees the slot (a failure leaves it to its lease).
    pub(super) async fn release(&self) {
        self.renewal.abort();
        let sequence = self.sequence;
        let released = modify(&self.store, &self.entry, &self.entry_locks, |slots| {
            (slots.release(sequence, now()), ())
        })
        .await;
        if let Err(err) = released {
            tracing::warn!(entry = %self.entry, error = %err, "could not free a concurrency slot; it is free when its lease ends");
        }
    }
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        // A permit dropped without release (a path that returned early) stops renewing: the
        // slot is free when its lease ends.
        self.renewal.abort();
    }
}
