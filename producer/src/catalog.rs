//! The producer's view of the task-type catalog (PROTOCOL.md, "Task-type catalog"): what the
//! workers handling a type published about it, read from the `<PREFIX>_CATALOG` bucket and
//! cached for a short time, so that a type a worker tracks is tracked whatever the caller's
//! code says (a Python caller need not repeat `track_status=True`).
//!
//! Lookups never fail: a missing bucket (an older deployment, not provisioned yet), a missing
//! entry, a user not allowed to read it or an unreadable value all mean "unknown", and an
//! unknown type is enqueued exactly as before. Answers, including "unknown", are cached for
//! [`Catalog::DEFAULT_TTL`] so an enqueue costs at most one catalog read per type per TTL.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, kv};
use jetq_contract::{
    catalog::{self, CatalogEntry},
    Subjects,
};

/// A cached reader of the task-type catalog. Clones share the cache.
#[derive(Clone)]
pub struct Catalog {
    js: jetstream::Context,
    bucket: String,
    ttl: Duration,
    cache: Arc<Mutex<Cache>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("bucket", &self.bucket)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Cache {
    /// The bucket once opened, or when it was last found missing.
    store: Option<Result<kv::Store, Instant>>,
    /// Each looked-up key: when it was read and what it held.
    entries: HashMap<String, (Instant, Option<CatalogEntry>)>,
}

impl Catalog {
    /// How long an answer (also "unknown") is reused: a type whose workers start tracking it
    /// is tracked by producers within this time.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

    /// A reader of the catalog of the deployment `subjects` names.
    pub fn new(js: jetstream::Context, subjects: &Subjects) -> Catalog {
        Catalog {
            js,
            bucket: catalog::bucket(subjects),
            ttl: Catalog::DEFAULT_TTL,
            cache: Arc::default(),
        }
    }

    /// Reuses answers for `ttl` instead of [`Catalog::DEFAULT_TTL`].
    pub fn with_ttl(mut self, ttl: Duration) -> Catalog {
        self.ttl = ttl;
        self
    }

    /// What the workers published about `queue`/`task`, or `None` when nothing is known.
    pub async fn entry(&self, queue: &str, task: &str) -> Option<CatalogEntry> {
        let key = catalog::key(queue, task);
        if let Some((read, entry)) = self.lock().entries.get(&key) {
            if read.elapsed() < self.ttl {
                return entry.clone();
            }
        }
        let entry = match self.store().await {
            Some(store) => read_entry(&store, &key).await,
            None => None,
        };
        self.lock()
            .entries
            .insert(key, (Instant::now(), entry.clone()));
        entry
    }

    /// The cached answer of [`Catalog::tracked`] while it is fresh, without reading anything:
    /// `None` when the catalog must be read.
    pub fn cached_tracked(&self, queue: &str, task: &str) -> Option<bool> {
        let key = catalog::key(queue, task);
        match self.lock().entries.get(&key) {
            Some((read, entry)) if read.elapsed() < self.ttl => {
                Some(entry.as_ref().is_some_and(|e| e.tracked))
            }
            _ => None,
        }
    }

    /// Whether the workers of `queue`/`task` track its status (false when unknown).
    pub async fn tracked(&self, queue: &str, task: &str) -> bool {
        self.entry(queue, task).await.is_some_and(|e| e.tracked)
    }

    /// The bucket, opened once; a missing one is looked for again after the TTL.
    async fn store(&self) -> Option<kv::Store> {
        match &self.lock().store {
            Some(Ok(store)) => return Some(store.clone()),
            Some(Err(missing)) if missing.elapsed() < self.ttl => return None,
            _ => {}
        }
        let opened = self.js.get_key_value(self.bucket.clone()).await;
        let mut cache = self.lock();
        match opened {
            Ok(store) => {
                cache.store = Some(Ok(store.clone()));
                Some(store)
            }
            Err(err) => {
                tracing::debug!(bucket = %self.bucket, error = %err, "no task-type catalog");
                cache.store = Some(Err(Instant::now()));
                None
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding the lock leaves a cache that is still consistent.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The entry under `key`, or `None` when missing, deleted or not an entry.
async fn read_entry(store: &kv::Store, key: &str) -> Option<CatalogEntry> {
    match store.get(key).await {
        Ok(Some(value)) => match serde_json::from_slice(&value) {
            Ok(entry) => Some(entry),
            Err(err) => {
                tracing::warn!(%key, error = %err, "catalog entry is not a task type: ignored");
                None
            }
        },
        Ok(None) => None,
        Err(err) => {
            tracing::debug!(%key, error = %err, "catalog entry not readable");
            None
        }
    }
}
