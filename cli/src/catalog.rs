//! The task-type catalog as an operator reads it (`docs/PROTOCOL.md` §9): every task type the
//! workers published to the `<PREFIX>_CATALOG` bucket — queue, task, attempts, timeout, whether
//! it is tracked, when a worker last wrote it — for `jetq catalog` and the dashboard.
//!
//! Entries are read with the contract's own [`CatalogEntry`] (the type workers write and
//! producers read), so the CLI shows exactly what a producer would make of each one: a value a
//! producer would ignore is listed apart, as [`UnreadableEntry`], with the reason.

use futures::{StreamExt, TryStreamExt};
use jetq_contract::catalog::{self, CatalogEntry};
use serde::Serialize;

use crate::{admin::Admin, error::AdminError};

/// How many entries are read at once.
const READ_CONCURRENCY: usize = 16;

/// What the catalog holds (or the part of one queue).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CatalogListing {
    /// The bucket read, e.g. `JETQ_CATALOG`.
    pub bucket: String,
    /// False when the bucket does not exist: no worker that publishes a catalog has started
    /// (or provisioning has not run) on this installation.
    pub exists: bool,
    /// The task types, ordered by queue, then task; each as its workers wrote it.
    pub entries: Vec<CatalogEntry>,
    /// Keys whose value is not a catalog entry (producers treat these types as unknown).
    pub unreadable: Vec<UnreadableEntry>,
}

/// A catalog key whose value producers ignore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnreadableEntry {
    /// The key, `<queue>.<task>`.
    pub key: String,
    /// Why the value is not an entry (the JSON error).
    pub error: String,
}

impl CatalogListing {
    /// True when there is nothing to show (no entry, readable or not).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.unreadable.is_empty()
    }
}

impl Admin {
    /// The catalog's entries, all or only those of `queue` (keys `<queue>.*`). A missing bucket is
    /// not an error: the listing says so ([`CatalogListing::exists`]).
    pub async fn catalog(&self, queue: Option<&str>) -> Result<CatalogListing, AdminError> {
        if let Some(queue) = queue {
            jetq_contract::name::validate(jetq_contract::NameKind::Queue, queue)?;
        }
        let bucket = catalog::bucket(self.subjects());
        let mut listing = CatalogListing {
            bucket: bucket.clone(),
            exists: false,
            entries: Vec::new(),
            unreadable: Vec::new(),
        };
        // The bucket's stream: "missing" is an answer, any other failure an error.
        if self
            .optional_stream(&format!("KV_{bucket}"))
            .await?
            .is_none()
        {
            return Ok(listing);
        }
        listing.exists = true;
        let store = self
            .jetstream()
            .get_key_value(bucket.as_str())
            .await
            .map_err(|err| AdminError::nats(format!("cannot open the catalog {bucket}"), err))?;
        let cannot_list = |err: &dyn std::fmt::Display| {
            AdminError::nats(format!("cannot list the catalog {bucket}"), err.to_string())
        };
        let mut keys: Vec<String> = store
            .keys()
            .await
            .map_err(|err| cannot_list(&err))?
            .try_collect()
            .await
            .map_err(|err| cannot_list(&err))?;
        if let Some(queue) = queue {
            let prefix = format!("{queue}.");
            keys.retain(|key| key.starts_with(&prefix));
        }
        let values: Vec<_> = futures::stream::iter(keys)
            .map(|key| {
                let store = store.clone();
                async move {
                    let value = store.get(key.as_str()).await;
                    (key, value)
                }
            })
            .buffered(READ_CONCURRENCY)
            .collect()
            .await;
        for (key, value) in values {
            let value = value.map_err(|err| {
                AdminError::nats(format!("cannot read catalog entry {key} of {bucket}"), err)
            })?;
            // Deleted since it was listed: gone, as for a producer.
            let Some(value) = value else { continue };
            match serde_json::from_slice::<CatalogEntry>(&value) {
                Ok(entry) => listing.entries.push(entry),
                Err(err) => listing.unreadable.push(UnreadableEntry {
                    key,
                    error: err.to_string(),
                }),
            }
        }
        listing
            .entries
            .sort_by(|a, b| (&a.queue, &a.task).cmp(&(&b.queue, &b.task)));
        listing.unreadable.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(listing)
    }
}
