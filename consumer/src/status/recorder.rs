//! The status recorder: opens the status stores on the first tracked task and writes the
//! records of deliveries (queued, running, dead) as compare-and-set updates.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use async_nats::jetstream::{kv, object_store::ObjectStore};
use jetq_contract::{
    status::{self as wire, TaskState, TaskStatus},
    DeadReason, ProvisionError, Topology,
};

use super::Tracker;

/// The status bucket and artifact store, once opened.
pub(crate) struct Stores {
    pub(crate) kv: kv::Store,
    pub(crate) objects: Option<ObjectStore>,
    pub(crate) client: async_nats::Client,
    pub(crate) recheck: Duration,
}

/// How long a worker waits before it tries again to open a status store it could not open
/// (missing, or not permitted), so a misconfiguration costs one request timeout per period
/// rather than one per task.
const REOPEN_AFTER: Duration = Duration::from_secs(30);

/// Opens the stores on the first tracked task, so a worker that never sees one never asks.
#[derive(Clone)]
pub(crate) struct StatusRecorder {
    topology: Topology,
    client: async_nats::Client,
    recheck: Duration,
    opened: Arc<tokio::sync::Mutex<Opened>>,
}

#[derive(Default)]
struct Opened {
    stores: Option<Arc<Stores>>,
    /// After a failed open: not before this instant.
    retry_at: Option<tokio::time::Instant>,
}

/// What a handler's context knows about its task's status.
#[derive(Debug, Clone)]
pub(crate) enum ContextStatus {
    /// The task is not tracked.
    Untracked,
    /// The task is tracked, but the status store could not be opened.
    Unavailable,
    /// The task is tracked.
    Tracked(Arc<Tracker>),
}

impl ContextStatus {
    pub(crate) fn of(tracker: Option<Arc<Tracker>>, tracked: bool) -> Self {
        match (tracker, tracked) {
            (Some(tracker), _) => ContextStatus::Tracked(tracker),
            (None, true) => ContextStatus::Unavailable,
            (None, false) => ContextStatus::Untracked,
        }
    }
}

/// What the status record says about a delivery before it runs.
pub(crate) enum Start {
    /// The status store cannot be opened: run as usual.
    Unavailable,
    /// Tracked and now `running`.
    Run(Arc<Tracker>),
    /// The record says the task is over (cancelled while queued, or finished by an earlier
    /// delivery whose ack was lost): settle the message without running it.
    Skip(TaskState),
}

/// The facts of a delivery that go into its record.
pub(crate) struct Started<'a> {
    pub(crate) id: &'a str,
    pub(crate) queue: &'a str,
    pub(crate) task: &'a str,
    pub(crate) sequence: u64,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) enqueued_at: SystemTime,
}

/// A dead letter of a possibly tracked task.
pub(crate) struct Dead<'a> {
    pub(crate) id: &'a str,
    pub(crate) queue: &'a str,
    pub(crate) task: &'a str,
    pub(crate) sequence: u64,
    pub(crate) attempts: u32,
    pub(crate) reason: DeadReason,
    pub(crate) error: &'a str,
}

impl StatusRecorder {
    /// A recorder for the worker; when `provision` is set and a registered type is tracked, the
    /// status bucket and the artifact store are created or reconciled now.
    pub(crate) async fn new(
        topology: Topology,
        client: async_nats::Client,
        recheck: Duration,
        any_tracked: bool,
        provision: bool,
    ) -> Result<Self, ProvisionError> {
        if any_tracked && provision {
            topology.ensure_status_stores().await?;
        }
        Ok(StatusRecorder {
            topology,
            client,
            recheck,
            opened: Arc::new(tokio::sync::Mutex::new(Opened::default())),
        })
    }

    /// The stores, opened on first use; `None` while they cannot be opened (tried again after
    /// [`REOPEN_AFTER`]).
    async fn stores(&self) -> Option<Arc<Stores>> {
        let mut opened = self.opened.lock().await;
        if let Some(stores) = &opened.stores {
            return Some(stores.clone());
        }
        if opened
            .retry_at
            .is_some_and(|at| tokio::time::Instant::now() < at)
        {
            return None;
        }
        let kv = match self.topology.status_bucket().await {
            Ok(kv) => kv,
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?REOPEN_AFTER, "tracked tasks run without status: the status bucket is missing or not permitted");
                opened.retry_at = Some(tokio::time::Instant::now() + REOPEN_AFTER);
                return None;
            }
        };
        let objects = match self.topology.artifact_store().await {
            Ok(objects) => Some(objects),
            Err(err) => {
                tracing::warn!(error = %err, "the artifact store is missing: handlers cannot store artifacts");
                None
            }
        };
        let stores = Arc::new(Stores {
            kv,
            objects,
            client: self.client.clone(),
            recheck: self.recheck,
        });
        opened.stores = Some(stores.clone());
        Some(stores)
    }

    /// Marks a tracked delivery `running` (compare-and-set), unless its record says it must not
    /// run. A status store that cannot be reached never stops the task: it runs, and later
    /// writes try again.
    pub(crate) async fn start(&self, started: Started<'_>) -> Start {
        let Some(stores) = self.stores().await else {
            return Start::Unavailable;
        };
        let key = wire::key(started.id);
        // Subscribe before reading, so a cancellation written after the read is not missed.
        let subscription = match stores
            .client
            .subscribe(format!("{}{}", stores.kv.prefix, key))
            .await
        {
            Ok(subscription) => Some(subscription),
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch for cancellation; checking at heartbeats only");
                None
            }
        };
        let mut fresh = TaskStatus::new(started.id, started.queue, started.task);
        fresh.enqueued_at = Some(jetq_contract::time::format(started.enqueued_at));
        fresh.sequence = Some(started.sequence);
        let tracker = Arc::new(Tracker::new(stores.clone(), key, fresh, started.sequence));
        let result = tracker
            .update_inner(true, |record| {
                record.sequence = Some(started.sequence);
                if record.is_cancel_requested() {
                    // Cancelled while it ran, then its worker stopped: it is over.
                    record.enter(TaskState::Cancelled, None);
                    return true;
                }
                record.attempt = started.attempt;
                record.max_attempts = Some(started.max_attempts);
                record.started_at = Some(jetq_contract::time::now());
                record.progress = None;
                record.result = None;
                record.artifacts.clear();
                record.enter(TaskState::Running, None);
                true
            })
            .await;
        match result {
            Ok(Some(record)) if record.state.is_terminal() => return Start::Skip(record.state),
            Ok(Some(_)) => {}
            Ok(None) => {
                if let Some(state) = tracker.terminal_state().await {
                    return Start::Skip(state);
                }
            }
            Err(err) => tracing::warn!(error = %err, "could not mark the task running"),
        }
        tracker.watch_cancellation(subscription);
        Start::Run(tracker)
    }

    /// Records a dead letter: the task is `failed` (its handler gave the verdict) or `dead`.
    /// Only tracked tasks are written.
    pub(crate) async fn dead_lettered(
        &self,
        tracker: Option<&Arc<Tracker>>,
        tracked: bool,
        dead: Dead<'_>,
    ) {
        let detached;
        let tracker = match tracker {
            Some(tracker) => tracker,
            None if tracked => {
                let Some(stores) = self.stores().await else {
                    return;
                };
                let mut fresh = TaskStatus::new(dead.id, dead.queue, dead.task);
                fresh.sequence = Some(dead.sequence);
                detached = Arc::new(Tracker::new(
                    stores,
                    wire::key(dead.id),
                    fresh,
                    dead.sequence,
                ));
                &detached
            }
            None => return,
        };
        let state = TaskState::of_dead_reason(dead.reason);
        let result = tracker
            .update_inner(true, |record| {
                record.sequence = Some(dead.sequence);
                record.attempt = record.attempt.max(dead.attempts);
                record.dead_reason = Some(dead.reason);
                record.enter(state, Some(dead.error));
                true
            })
            .await;
        if let Err(err) = result {
            tracing::warn!(error = %err, "could not record the dead letter in the task's status");
        }
    }
}
