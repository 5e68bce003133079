//! The status of one tracked attempt: its record, progress, pending result and artifacts, and
//! its cancellation.

use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use async_nats::jetstream::kv::{Operation, UpdateErrorKind};
use futures::StreamExt;
use jetq_contract::status::{ArtifactInfo, TaskState, TaskStatus};
use tokio_util::sync::CancellationToken;

use super::{recorder::Stores, StatusError};

/// Compare-and-set rounds before a status write gives up (each lost round means someone else
/// wrote the record in between).
const CAS_ROUNDS: usize = 8;

/// The record as last read or written, and its revision (`None`: read it before writing).
struct Current {
    record: TaskStatus,
    revision: Option<u64>,
    /// The key now belongs to another task (a new task reused the id): never write it again.
    foreign: bool,
}

/// The status of one tracked attempt: its record, its pending result and artifacts, and its
/// cancellation.
pub(crate) struct Tracker {
    pub(crate) stores: Arc<Stores>,
    key: String,
    id: String,
    sequence: u64,
    current: tokio::sync::Mutex<Current>,
    pending: Mutex<Pending>,
    pub(crate) cancelled: CancellationToken,
    done: CancellationToken,
}

#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) result: Option<serde_json::Value>,
    pub(crate) artifacts: Vec<ArtifactInfo>,
    /// The result is over the status record's limit (a batch member's, which may be larger:
    /// it goes to its batch, not to the record).
    pub(crate) result_oversized: bool,
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("key", &self.key)
            .field("sequence", &self.sequence)
            .field("cancelled", &self.cancelled.is_cancelled())
            .finish()
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.done.cancel();
    }
}

impl Tracker {
    pub(crate) fn new(stores: Arc<Stores>, key: String, fresh: TaskStatus, sequence: u64) -> Self {
        Tracker {
            stores,
            key,
            id: fresh.id.clone(),
            sequence,
            current: tokio::sync::Mutex::new(Current {
                record: fresh,
                revision: None,
                foreign: false,
            }),
            pending: Mutex::new(Pending::default()),
            cancelled: CancellationToken::new(),
            done: CancellationToken::new(),
        }
    }

    pub(crate) fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// True once a cancellation of this task was seen.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.is_cancelled()
    }

    /// A token cancelled with the task (the parent of the attempt's own token).
    pub(crate) fn cancellation(&self) -> &CancellationToken {
        &self.cancelled
    }

    /// Stops the cancellation watch: the attempt is over.
    pub(crate) fn close(&self) {
        self.done.cancel();
    }

    pub(crate) async fn terminal_state(&self) -> Option<TaskState> {
        let current = self.current.lock().await;
        (!current.foreign && current.record.state.is_terminal()).then_some(current.record.state)
    }

    /// Reads the record into `current`. A missing (or expired) record is recreated from the
    /// in-memory one; a record of another task with the same id makes this tracker stale.
    async fn refresh(&self, current: &mut Current, claim: bool) -> Result<(), StatusError> {
        let entry = self
            .stores
            .kv
            .entry(self.key.clone())
            .await
            .map_err(|err| self.write_error(err))?;
        match entry {
            Some(entry) if entry.operation == Operation::Put => {
                match TaskStatus::from_json(&entry.value) {
                    Ok(record) if !record.belongs_to(self.sequence) => {
                        // An earlier task with the same id is replaced by this one; a later
                        // one owns the key.
                        if !(claim && record.sequence < Some(self.sequence)) {
                            current.foreign = true;
                        }
                    }
                    Ok(record) => {
                        if record.is_cancel_requested() {
                            self.cancelled.cancel();
                        }
                        current.record = record;
                    }
                    Err(err) => {
                        tracing::warn!(key = %self.key, error = %err, "unreadable status record; replacing it");
                    }
                }
                current.revision = Some(entry.revision);
            }
            // Absent, deleted or expired: (re)create it.
            Some(entry) => current.revision = Some(entry.revision),
            None => current.revision = Some(0),
        }
        Ok(())
    }

    /// Applies `change` to the latest record and writes it with compare-and-set, re-reading and
    /// re-applying on conflict. Returns the record written, or `None` when nothing was written:
    /// the record is terminal (never replaced), belongs to another task, or `change` returned
    /// false.
    pub(crate) async fn update<F>(&self, change: F) -> Result<Option<TaskStatus>, StatusError>
    where
        F: FnMut(&mut TaskStatus) -> bool,
    {
        self.update_inner(false, change).await
    }

    /// [`Tracker::update`]; with `claim`, a record left by an earlier task with the same id
    /// (a lower sequence) is replaced instead of making this tracker stale.
    pub(crate) async fn update_inner<F>(
        &self,
        claim: bool,
        mut change: F,
    ) -> Result<Option<TaskStatus>, StatusError>
    where
        F: FnMut(&mut TaskStatus) -> bool,
    {
        let mut current = self.current.lock().await;
        for _ in 0..CAS_ROUNDS {
            let revision = match current.revision {
                Some(revision) => revision,
                None => {
                    self.refresh(&mut current, claim).await?;
                    current.revision.unwrap_or(0)
                }
            };
            if current.foreign || current.record.state.is_terminal() {
                return Ok(None);
            }
            let mut next = current.record.clone();
            if !change(&mut next) {
                return Ok(None);
            }
            let bytes = next.to_json().map_err(|source| StatusError::Encode {
                id: self.id.clone(),
                source,
            })?;
            match self
                .stores
                .kv
                .update(self.key.as_str(), bytes.into(), revision)
                .await
            {
                Ok(written) => {
                    current.record = next.clone();
                    current.revision = Some(written);
                    return Ok(Some(next));
                }
                Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => {
                    current.revision = None;
                }
                Err(err) => {
                    current.revision = None;
                    return Err(self.write_error(err));
                }
            }
        }
        Err(StatusError::Write {
            id: self.id.clone(),
            source: format!("the record changed {CAS_ROUNDS} times while being written").into(),
        })
    }

    fn write_error(&self, err: impl std::error::Error + Send + Sync + 'static) -> StatusError {
        StatusError::Write {
            id: self.id.clone(),
            source: Box::new(err),
        }
    }

    /// Watches the task's key for a cancellation: every write to the key arrives on its
    /// subject; the record is also re-read at each recheck in case a message was missed.
    pub(crate) fn watch_cancellation(&self, subscription: Option<async_nats::Subscriber>) {
        let kv = self.stores.kv.clone();
        let key = self.key.clone();
        let sequence = self.sequence;
        let cancelled = self.cancelled.clone();
        let done = self.done.clone();
        let recheck = self.stores.recheck.max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut subscription = subscription;
            let mut ticker =
                tokio::time::interval_at(tokio::time::Instant::now() + recheck, recheck);
            let wants_cancel = |bytes: &[u8]| {
                TaskStatus::from_json(bytes)
                    .map(|record| record.belongs_to(sequence) && record.is_cancel_requested())
                    .unwrap_or(false)
            };
            loop {
                let next = async {
                    match subscription.as_mut() {
                        Some(subscription) => subscription.next().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = done.cancelled() => return,
                    message = next => match message {
                        Some(message) => if wants_cancel(&message.payload) {
                            break;
                        },
                        None => subscription = None,
                    },
                    _ = ticker.tick() => {
                        if let Ok(Some(entry)) = kv.entry(key.clone()).await {
                            if entry.operation == Operation::Put && wants_cancel(&entry.value) {
                                break;
                            }
                        }
                    }
                }
            }
            tracing::info!(key = %key, "cancellation requested; the handler is told");
            cancelled.cancel();
        });
    }

    /// `succeeded`, with the result and artifacts the handler left. Written before the ack.
    pub(crate) async fn succeeded(&self) {
        let pending = std::mem::take(&mut *self.pending());
        let result = self
            .update(|record| {
                record.result = pending.result.clone().filter(|_| !pending.result_oversized);
                record.artifacts = pending.artifacts.clone();
                record.enter(TaskState::Succeeded, None);
                true
            })
            .await;
        self.log_failure(result, "succeeded");
    }

    /// `retrying`, the next attempt due after `delay`.
    pub(crate) async fn retrying(&self, error: &str, delay: Duration) {
        let next = jetq_contract::time::format(SystemTime::now() + delay);
        let result = self
            .update(|record| {
                record.next_attempt_at = Some(next.clone());
                record.enter(TaskState::Retrying, Some(error));
                true
            })
            .await;
        self.log_failure(result, "retrying");
    }

    /// Back to `queued`: a shutdown handed the task back.
    pub(crate) async fn handed_back(&self) {
        let result = self
            .update(|record| {
                record.enter(TaskState::Queued, None);
                true
            })
            .await;
        self.log_failure(result, "queued");
    }

    /// `cancelled`: the handler returned after a cancellation.
    pub(crate) async fn cancelled(&self) {
        let result = self
            .update(|record| {
                record.enter(TaskState::Cancelled, None);
                true
            })
            .await;
        self.log_failure(result, "cancelled");
    }

    fn log_failure(&self, result: Result<Option<TaskStatus>, StatusError>, state: &str) {
        if let Err(err) = result {
            tracing::warn!(error = %err, state, "could not record the task's status");
        }
    }
}
