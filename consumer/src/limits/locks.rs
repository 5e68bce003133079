//! Writes to one limits entry from one process, one at a time.
//!
//! Every worker of every pod updates the same entry (a type's rate bucket, its slots) with
//! compare-and-set. Tasks of one process racing each other would only lose rounds to one
//! another: here they queue on a local lock per entry (striped: a fixed set of locks chosen by
//! the entry's hash), so compare-and-set conflicts come only from other processes.

use std::{
    collections::hash_map::DefaultHasher,
    hash::{Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use tokio::sync::{Mutex, MutexGuard};

/// Locks per process.
const STRIPES: usize = 64;

/// Compare-and-set rounds of a limits write before it gives up: more than for a status record,
/// since every worker of every pod writes the same entry.
pub(super) const ROUNDS: u32 = 32;

/// The local locks of the limits entries, and what this process last knew of each.
#[derive(Clone)]
pub(super) struct EntryLocks(Arc<Vec<Mutex<()>>>, Arc<Known>);

impl EntryLocks {
    pub(super) fn new() -> Self {
        EntryLocks(
            Arc::new((0..STRIPES).map(|_| Mutex::new(())).collect()),
            Arc::new(Known::default()),
        )
    }

    /// Waits for the lock of `entry`.
    pub(super) async fn lock(&self, entry: &str) -> MutexGuard<'_, ()> {
        let mut hasher = DefaultHasher::new();
        entry.hash(&mut hasher);
        let stripe = (hasher.finish() % STRIPES as u64) as usize;
        self.0[stripe].lock().await
    }
}

/// The pause after a lost compare-and-set round: a random 0–2 ms, so processes that collided
/// do not collide again in step.
pub(super) async fn after_conflict() {
    let pause = Duration::from_micros(rand::random_range(0..2_000));
    tokio::time::sleep(pause).await;
}

/// Most entries whose last known value a process keeps (per-key limits can have many keys).
const KNOWN_ENTRIES: usize = 10_000;

/// The last value this process read or wrote of each entry, with its revision: the next write
/// is tried on it directly (one round trip instead of a read and a write), and a
/// compare-and-set conflict — another process wrote meanwhile — falls back to reading.
#[derive(Default)]
pub(super) struct Known(std::sync::Mutex<std::collections::HashMap<String, (u64, bytes::Bytes)>>);

impl Known {
    fn get(&self, entry: &str) -> Option<(u64, bytes::Bytes)> {
        self.0.lock().ok()?.get(entry).cloned()
    }

    fn remember(&self, entry: &str, revision: u64, value: bytes::Bytes) {
        if let Ok(mut known) = self.0.lock() {
            if known.len() >= KNOWN_ENTRIES && !known.contains_key(entry) {
                known.clear();
            }
            known.insert(entry.to_owned(), (revision, value));
        }
    }

    fn forget(&self, entry: &str) {
        if let Ok(mut known) = self.0.lock() {
            known.remove(entry);
        }
    }
}

/// A compare-and-set change of one limits entry, this process's writers taking turns on it:
/// `change` gets the current value (`None`: no entry, or a deleted one) and returns the value to
/// write (`None`: nothing to write) and an answer. Tried first on the last value this process
/// knew; on a conflict the entry is read again (after a short random pause when the conflict
/// was with a value just read), at most [`ROUNDS`] reads.
pub(super) async fn modify<T>(
    store: &async_nats::jetstream::kv::Store,
    entry: &str,
    entry_locks: &EntryLocks,
    mut change: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, T),
) -> Result<T, String> {
    use async_nats::jetstream::kv::{CreateErrorKind, Operation, UpdateErrorKind};

    let _local = entry_locks.lock(entry).await;
    let known = &entry_locks.1;
    let mut cached = known.get(entry);
    let mut reads = 0;
    loop {
        let from_cache = cached.is_some();
        let (value, revision) = match cached.take() {
            Some((revision, value)) => (Some(value), Some(revision)),
            None => {
                if reads > 0 {
                    after_conflict().await;
                }
                reads += 1;
                if reads > ROUNDS {
                    return Err(format!("{entry} changed {ROUNDS} times while writing it"));
                }
                match store.entry(entry).await.map_err(|err| err.to_string())? {
                    Some(e) if !matches!(e.operation, Operation::Delete | Operation::Purge) => {
                        (Some(e.value), Some(e.revision))
                    }
                    Some(e) => (None, Some(e.revision)),
                    None => (None, None),
                }
            }
        };
        let (write, answer) = change(value.as_deref());
        let Some(write) = write else {
            if let (Some(value), Some(revision), false) = (value, revision, from_cache) {
                known.remember(entry, revision, value);
            }
            return Ok(answer);
        };
        let write = bytes::Bytes::from(write);
        let written = match revision {
            Some(revision) => store
                .update(entry, write.clone(), revision)
                .await
                .map_err(|err| {
                    (
                        err.kind() == UpdateErrorKind::WrongLastRevision,
                        err.to_string(),
                    )
                }),
            None => store.create(entry, write.clone()).await.map_err(|err| {
                (
                    err.kind() == CreateErrorKind::AlreadyExists,
                    err.to_string(),
                )
            }),
        };
        match written {
            Ok(revision) => {
                known.remember(entry, revision, write);
                return Ok(answer);
            }
            Err((true, _)) => known.forget(entry),
            Err((false, err)) => {
                known.forget(entry);
                return Err(err);
            }
        }
    }
}
