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

/// The local locks of the limits entries.
#[derive(Clone)]
pub(super) struct EntryLocks(Arc<Vec<Mutex<()>>>);

impl EntryLocks {
    pub(super) fn new() -> Self {
        EntryLocks(Arc::new((0..STRIPES).map(|_| Mutex::new(())).collect()))
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
