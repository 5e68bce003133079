//! Releasing a task's unique key (PROTOCOL §11): the worker deletes the key's entry in
//! `<PREFIX>_UNIQUE` when the task's scope says so — but only while the entry still names this
//! task (compare-and-set delete on the revision read), never a later holder's.

use async_nats::{
    jetstream::kv::{self, Operation},
    HeaderMap,
};
use jetq_contract::{
    flow::{
        self,
        unique::{release_at, ReleaseAt, UniqueHold},
    },
    Topology,
};

use super::FlowTask;

/// When the task's unique key is released; `None` without a unique key (or with a scope this
/// version does not know: the key is then left to expire or be taken over).
pub(super) fn release_point(headers: &HeaderMap) -> Option<ReleaseAt> {
    headers.get(flow::names::UNIQUE_KEY)?;
    release_at(headers.get(flow::names::UNIQUE_SCOPE)?.as_str())
}

/// The unique-key bucket, opened on the first task that holds a key.
pub(crate) struct UniqueKeys {
    topology: Topology,
    store: tokio::sync::OnceCell<kv::Store>,
}

impl UniqueKeys {
    pub(super) fn new(topology: Topology) -> Self {
        UniqueKeys {
            topology,
            store: tokio::sync::OnceCell::new(),
        }
    }

    async fn store(&self) -> Option<&kv::Store> {
        let bucket = flow::unique_bucket(self.topology.subjects());
        match self
            .store
            .get_or_try_init(|| self.topology.jetstream().get_key_value(bucket.clone()))
            .await
        {
            Ok(store) => Some(store),
            Err(err) => {
                tracing::warn!(%bucket, error = %err, "unique-key bucket unavailable: the key is released when its holder is found gone");
                None
            }
        }
    }

    /// Deletes the task's unique key if it still names this task. Best effort: a key left
    /// behind is taken over by the next enqueue that finds its task gone from the stream.
    pub(super) async fn release(&self, task: &FlowTask<'_>) {
        let Some(key) = task.headers.get(flow::names::UNIQUE_KEY) else {
            return;
        };
        let Some(store) = self.store().await else {
            return;
        };
        let entry = flow::keys::unique_entry(task.queue, task.task, key.as_str());
        let current = match store.entry(&entry).await {
            Ok(Some(current))
                if !matches!(current.operation, Operation::Delete | Operation::Purge) =>
            {
                current
            }
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(entry, error = %err, "could not read the unique key to release it");
                return;
            }
        };
        let ours = UniqueHold::from_json(&current.value)
            .map(|hold| hold.task_id == task.id)
            .unwrap_or(false);
        if !ours {
            return;
        }
        if let Err(err) = store
            .delete_expect_revision(&entry, Some(current.revision))
            .await
        {
            tracing::debug!(entry, error = %err, "unique key not released (changed meanwhile)");
        }
    }

    /// Debounce: true if the key names another task (a later enqueue replaced this one). A key
    /// that is missing or cannot be read counts as naming this task: a task is never dropped on
    /// a guess.
    pub(super) async fn replaced(&self, task: &FlowTask<'_>) -> bool {
        let Some(key) = task.headers.get(flow::names::UNIQUE_KEY) else {
            return false;
        };
        let Some(store) = self.store().await else {
            return false;
        };
        let entry = flow::keys::unique_entry(task.queue, task.task, key.as_str());
        match store.get(&entry).await {
            Ok(Some(value)) => {
                UniqueHold::from_json(&value).is_ok_and(|hold| hold.task_id != task.id)
            }
            Ok(None) => false,
            Err(err) => {
                tracing::warn!(entry, error = %err, "could not read the debounce key; running the task");
                false
            }
        }
    }
}
