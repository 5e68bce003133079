//! The worker side of task status: records each transition of a tracked task, and gives its
//! handler progress, results, artifacts and cancellation through the [`TaskContext`].
//!
//! A task is tracked when its type opts in ([`jetq_contract::TaskOptions::track_status`]) or its
//! message carries `Jetq-Track-Status: 1`. Untracked tasks never touch the status bucket.
//!
//! Every write is a compare-and-set on the revision last read, and a record in a terminal state
//! is never replaced: a stale worker (one whose task was cancelled, or redelivered elsewhere and
//! finished) cannot overwrite the outcome. A running tracked task learns of a cancellation from a
//! plain subscription to its own key's subject (the producer's cancel write arrives there), with a
//! re-read of the record at every heartbeat in case that message was missed.

use std::{
    fmt,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use async_nats::{
    jetstream::{
        kv::{self, Operation, UpdateErrorKind},
        object_store::{ObjectMetadata, ObjectStore},
        AckKind,
    },
    HeaderMap,
};
use futures::StreamExt;
use jetq_contract::{
    headers,
    status::{
        self as wire, ArtifactInfo, ArtifactNameError, Progress, TaskState, TaskStatus,
        MAX_PROGRESS_MESSAGE, MAX_RESULT_BYTES,
    },
    DeadReason, ProvisionError, Topology,
};
use serde::Serialize;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use crate::context::TaskContext;

/// Compare-and-set rounds before a status write gives up (each lost round means someone else
/// wrote the record in between).
const CAS_ROUNDS: usize = 8;
/// Bytes buffered by an [`ArtifactWriter`] before they go to the object store: one chunk.
const ARTIFACT_CHUNK: usize = 128 * 1024;

/// A boxed error from the NATS client.
type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a status operation of a handler failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// The task is not tracked: its type does not opt in and its message did not ask.
    #[error(
        "task {task} does not track its status; enable TaskOptions::track_status for its type"
    )]
    NotTracked {
        /// The task's wire name.
        task: String,
    },
    /// The task's type tracks its status, but the status store could not be opened (missing,
    /// or the worker's NATS user may not use it; see `docs/STATUS.md`).
    #[error(
        "task {task} tracks its status but the status store is unavailable (missing, or not \
         permitted for this worker's NATS user)"
    )]
    Unavailable {
        /// The task's wire name.
        task: String,
    },
    /// The result is larger than a status record may hold.
    #[error(
        "the result of task {id} is {size} bytes, over the {MAX_RESULT_BYTES}-byte limit; \
         store it as an artifact instead"
    )]
    ResultTooLarge {
        /// The task id.
        id: String,
        /// The result's size as JSON.
        size: usize,
    },
    /// The result cannot be serialized to JSON.
    #[error("cannot encode the result of task {id} as JSON: {source}")]
    Encode {
        /// The task id.
        id: String,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// The artifact name is not usable.
    #[error(transparent)]
    ArtifactName(#[from] ArtifactNameError),
    /// The artifact store does not exist (provision it: a worker with a tracked type and
    /// `JETQ_PROVISION=true` creates it).
    #[error("the artifact store is not provisioned; task {id} cannot store {name}")]
    NoArtifactStore {
        /// The task id.
        id: String,
        /// The artifact's name.
        name: String,
    },
    /// Storing the artifact failed (the reader failed, the store is full or unreachable).
    #[error("cannot store artifact {name} of task {id}: {source}")]
    Artifact {
        /// The task id.
        id: String,
        /// The artifact's name.
        name: String,
        /// The object store's or the reader's error.
        source: BoxError,
    },
    /// The status record could not be written.
    #[error("cannot write the status of task {id}: {source}")]
    Write {
        /// The task id.
        id: String,
        /// The KV store's error.
        source: BoxError,
    },
}

/// True if the message asks for its status to be tracked (`Jetq-Track-Status: 1` or `true`).
pub(crate) fn has_track_header(headers: Option<&HeaderMap>) -> bool {
    headers
        .and_then(|map| map.get(jetq_contract::headers::names::TRACK_STATUS))
        .map(|value| {
            let value = value.as_str().trim();
            value == "1" || value.eq_ignore_ascii_case("true")
        })
        .unwrap_or(false)
}

/// The status bucket and artifact store, once opened.
struct Stores {
    kv: kv::Store,
    objects: Option<ObjectStore>,
    client: async_nats::Client,
    recheck: Duration,
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

/// Settles a delivery whose record says it is over: `succeeded` is acked (an earlier delivery
/// did the work but its ack was lost), anything else is terminated.
pub(crate) async fn settle_skipped(message: &async_nats::jetstream::Message, state: TaskState) {
    let (kind, what) = if state == TaskState::Succeeded {
        (AckKind::Ack, "already succeeded; acking the redelivery")
    } else {
        (AckKind::Term, "not running it: its status is final")
    };
    tracing::info!(state = state.as_str(), "{what}");
    if let Err(err) = message.ack_with(kind).await {
        tracing::warn!(error = %err, "could not settle a finished task");
    }
}

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
    stores: Arc<Stores>,
    key: String,
    id: String,
    sequence: u64,
    current: tokio::sync::Mutex<Current>,
    pending: Mutex<Pending>,
    cancelled: CancellationToken,
    done: CancellationToken,
}

#[derive(Default)]
struct Pending {
    result: Option<serde_json::Value>,
    artifacts: Vec<ArtifactInfo>,
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
    fn new(stores: Arc<Stores>, key: String, fresh: TaskStatus, sequence: u64) -> Self {
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

    fn pending(&self) -> MutexGuard<'_, Pending> {
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

    async fn terminal_state(&self) -> Option<TaskState> {
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
    async fn update<F>(&self, change: F) -> Result<Option<TaskStatus>, StatusError>
    where
        F: FnMut(&mut TaskStatus) -> bool,
    {
        self.update_inner(false, change).await
    }

    /// [`Tracker::update`]; with `claim`, a record left by an earlier task with the same id
    /// (a lower sequence) is replaced instead of making this tracker stale.
    async fn update_inner<F>(
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
    fn watch_cancellation(&self, subscription: Option<async_nats::Subscriber>) {
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
                record.result = pending.result.clone();
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

/// Ends a cancelled attempt: the record becomes `cancelled` and the message is terminated, so it
/// is neither retried nor dead-lettered.
pub(crate) async fn settle_cancelled(message: &async_nats::jetstream::Message, tracker: &Tracker) {
    tracker.cancelled().await;
    tracker.close();
    tracing::info!("task cancelled");
    if let Err(err) = message.ack_with(AckKind::Term).await {
        tracing::warn!(error = %err, "could not terminate a cancelled task");
    }
}

/// The id of a task message (`Nats-Msg-Id`), for the sweeper's dead letters.
pub(crate) fn message_id(headers: &HeaderMap) -> String {
    headers
        .get(headers::MSG_ID)
        .map(|value| value.as_str().to_owned())
        .unwrap_or_default()
}

/// Status, progress, results, artifacts and cancellation of a tracked task (see
/// [`jetq_contract::TaskOptions::track_status`]). On an untracked task the writers return
/// [`StatusError::NotTracked`] and the task is never cancelled.
impl TaskContext {
    fn tracker(&self) -> Result<&Arc<Tracker>, StatusError> {
        match &self.status {
            ContextStatus::Tracked(tracker) => Ok(tracker),
            ContextStatus::Unavailable => Err(StatusError::Unavailable {
                task: self.task.to_string(),
            }),
            ContextStatus::Untracked => Err(StatusError::NotTracked {
                task: self.task.to_string(),
            }),
        }
    }

    /// True if this task keeps a status record.
    pub fn is_tracked(&self) -> bool {
        self.tracker().is_ok()
    }

    /// Reports progress: `percent` (clamped to 0–100) and a short message (cut at 256 bytes).
    /// Written at once; watchers (e.g. `Producer::watch`) see every report, so call it at a
    /// human pace (every percent, every second), not per item.
    ///
    /// ```no_run
    /// # async fn handler(ctx: jetq_consumer::TaskContext) -> Result<(), jetq_consumer::TaskError> {
    /// for step in 1..=10u32 {
    ///     // ... a tenth of the work ...
    ///     ctx.progress(f64::from(step) * 10.0, format!("step {step} of 10")).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn progress(
        &self,
        percent: f64,
        message: impl Into<String>,
    ) -> Result<(), StatusError> {
        let tracker = self.tracker()?;
        let percent = if percent.is_nan() {
            0.0
        } else {
            percent.clamp(0.0, 100.0)
        };
        let message = wire::truncate(&message.into(), MAX_PROGRESS_MESSAGE);
        let now = jetq_contract::time::now();
        tracker
            .update(|record| {
                if record.state != TaskState::Running {
                    return false;
                }
                record.progress = Some(Progress {
                    percent,
                    message: message.clone(),
                    at: now.clone(),
                });
                record.updated_at = now.clone();
                true
            })
            .await?;
        Ok(())
    }

    /// Keeps `result` (any serde value, at most 64 KiB as JSON) in the status record, written
    /// with `succeeded` when the handler returns `Ok`. A later call replaces it.
    ///
    /// ```no_run
    /// # fn handler(ctx: jetq_consumer::TaskContext) -> Result<(), jetq_consumer::TaskError> {
    /// ctx.set_result(&serde_json::json!({ "rows": 1000 }))?;
    /// # Ok(()) }
    /// ```
    pub fn set_result<R: Serialize>(&self, result: &R) -> Result<(), StatusError> {
        let tracker = self.tracker()?;
        let encode = |source| StatusError::Encode {
            id: self.id.to_string(),
            source,
        };
        let value = serde_json::to_value(result).map_err(encode)?;
        let size = serde_json::to_vec(&value).map_err(encode)?.len();
        if size > MAX_RESULT_BYTES {
            return Err(StatusError::ResultTooLarge {
                id: self.id.to_string(),
                size,
            });
        }
        tracker.pending().result = Some(value);
        Ok(())
    }

    /// Stores an artifact read from `reader` in the artifact store, under this task's id.
    /// Listed in the record when the handler succeeds; readable by the web tier with
    /// `Producer::artifact`. Storing the same name again (e.g. on a retry) replaces it.
    ///
    /// ```no_run
    /// # async fn handler(ctx: jetq_consumer::TaskContext) -> Result<(), jetq_consumer::TaskError> {
    /// let mut file = tokio::fs::File::open("/tmp/report.pdf").await?;
    /// ctx.put_artifact("report.pdf", &mut file).await?;
    /// # Ok(()) }
    /// ```
    pub async fn put_artifact<R>(
        &self,
        name: &str,
        reader: &mut R,
    ) -> Result<ArtifactInfo, StatusError>
    where
        R: AsyncRead + Unpin,
    {
        let tracker = self.tracker()?;
        wire::validate_artifact_name(name)?;
        let store = self.artifact_store(tracker, name)?;
        let info = store
            .put(object_meta(&self.id, name), reader)
            .await
            .map_err(|err| StatusError::Artifact {
                id: self.id.to_string(),
                name: name.to_owned(),
                source: Box::new(err),
            })?;
        let artifact = artifact_info(name, &info);
        tracker.pending().artifacts.retain(|a| a.name != name);
        tracker.pending().artifacts.push(artifact.clone());
        Ok(artifact)
    }

    /// A writer streaming an artifact into the artifact store as it is written, in 128 KiB
    /// chunks: nothing is buffered whole, in memory or on disk. Call
    /// [`ArtifactWriter::finish`] to commit it; a writer dropped before that stores nothing.
    ///
    /// ```no_run
    /// # async fn handler(ctx: jetq_consumer::TaskContext) -> Result<(), jetq_consumer::TaskError> {
    /// use tokio::io::AsyncWriteExt;
    /// let mut csv = ctx.artifact_writer("export.csv")?;
    /// csv.write_all(b"id,name\n1,ada\n").await?;
    /// csv.finish().await?;
    /// # Ok(()) }
    /// ```
    pub fn artifact_writer(&self, name: &str) -> Result<ArtifactWriter, StatusError> {
        let tracker = self.tracker()?;
        wire::validate_artifact_name(name)?;
        let store = self.artifact_store(tracker, name)?.clone();
        let (writer, reader) = tokio::io::duplex(2 * ARTIFACT_CHUNK);
        let finished = Arc::new(AtomicBool::new(false));
        let mut reader = UntilFinished {
            inner: reader,
            finished: finished.clone(),
        };
        let meta = object_meta(&self.id, name);
        let upload = tokio::spawn(async move { store.put(meta, &mut reader).await });
        Ok(ArtifactWriter {
            pipe: Some(tokio::io::BufWriter::with_capacity(ARTIFACT_CHUNK, writer)),
            finished,
            upload: Some(upload),
            tracker: tracker.clone(),
            id: self.id.to_string(),
            name: name.to_owned(),
        })
    }

    fn artifact_store<'a>(
        &self,
        tracker: &'a Tracker,
        name: &str,
    ) -> Result<&'a ObjectStore, StatusError> {
        tracker
            .stores
            .objects
            .as_ref()
            .ok_or_else(|| StatusError::NoArtifactStore {
                id: self.id.to_string(),
                name: name.to_owned(),
            })
    }

    /// True once someone cancelled this task (`Producer::cancel`). Cooperative: the handler
    /// decides where to stop. Whatever it returns afterwards, the task ends `cancelled` and is
    /// not retried. Always false for an untracked task.
    pub fn is_cancelled(&self) -> bool {
        self.tracker().is_ok_and(|tracker| tracker.is_cancelled())
    }

    /// Resolves when the task is cancelled; never, for an untracked task. Use it in a
    /// `tokio::select!` around the work.
    ///
    /// ```no_run
    /// # async fn long_work() {}
    /// # async fn handler(ctx: jetq_consumer::TaskContext) -> Result<(), jetq_consumer::TaskError> {
    /// tokio::select! {
    ///     _ = long_work() => {}
    ///     _ = ctx.cancelled() => return Err(jetq_consumer::TaskError::fatal("cancelled")),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn cancelled(&self) {
        match self.tracker() {
            Ok(tracker) => tracker.cancelled.cancelled().await,
            Err(_) => std::future::pending().await,
        }
    }
}

fn object_meta(id: &str, name: &str) -> ObjectMetadata {
    ObjectMetadata {
        name: wire::artifact_object(id, name),
        description: Some(format!("jetq artifact {name} of task {id}")),
        ..Default::default()
    }
}

fn artifact_info(
    name: &str,
    info: &async_nats::jetstream::object_store::ObjectInfo,
) -> ArtifactInfo {
    ArtifactInfo {
        name: name.to_owned(),
        size: u64::try_from(info.size).unwrap_or(u64::MAX),
        digest: info.digest.clone(),
    }
}

/// Reads the pipe of an [`ArtifactWriter`]; its end counts as the end of the artifact only if
/// the writer was finished, so a writer dropped half-way fails the upload instead of storing a
/// truncated object.
struct UntilFinished {
    inner: DuplexStream,
    finished: Arc<AtomicBool>,
}

impl AsyncRead for UntilFinished {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                if self.finished.load(Ordering::Acquire) {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the artifact writer was dropped before finish()",
                    )))
                }
            }
            other => other,
        }
    }
}

/// Streams an artifact into the artifact store; from [`TaskContext::artifact_writer`].
///
/// Implements [`AsyncWrite`]: write to it, then call [`ArtifactWriter::finish`].
pub struct ArtifactWriter {
    pipe: Option<tokio::io::BufWriter<DuplexStream>>,
    finished: Arc<AtomicBool>,
    upload: Option<
        JoinHandle<
            Result<
                async_nats::jetstream::object_store::ObjectInfo,
                async_nats::jetstream::object_store::PutError,
            >,
        >,
    >,
    tracker: Arc<Tracker>,
    id: String,
    name: String,
}

impl fmt::Debug for ArtifactWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtifactWriter")
            .field("task", &self.id)
            .field("name", &self.name)
            .finish()
    }
}

impl ArtifactWriter {
    /// Flushes the last bytes, waits until the store has every chunk and the object's
    /// metadata, and lists the artifact in the task's record (written on success).
    pub async fn finish(mut self) -> Result<ArtifactInfo, StatusError> {
        let error = |source: BoxError| StatusError::Artifact {
            id: self.id.clone(),
            name: self.name.clone(),
            source,
        };
        if let Some(mut pipe) = self.pipe.take() {
            let flushed = pipe.flush().await;
            self.finished.store(true, Ordering::Release);
            // Shutting the pipe down is the end of the artifact for the upload.
            let _ = pipe.shutdown().await;
            drop(pipe);
            if let Err(err) = flushed {
                if let Some(upload) = self.upload.take() {
                    upload.abort();
                }
                return Err(error(Box::new(err)));
            }
        }
        let upload = self
            .upload
            .take()
            .ok_or_else(|| error("finish was already called".into()))?;
        let info = upload
            .await
            .map_err(|err| error(Box::new(err)))?
            .map_err(|err| error(Box::new(err)))?;
        let artifact = artifact_info(&self.name, &info);
        let mut pending = self.tracker.pending();
        pending.artifacts.retain(|a| a.name != self.name);
        pending.artifacts.push(artifact.clone());
        Ok(artifact)
    }

    fn pipe(&mut self) -> std::io::Result<Pin<&mut tokio::io::BufWriter<DuplexStream>>> {
        match self.pipe.as_mut() {
            Some(pipe) => Ok(Pin::new(pipe)),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the artifact writer is finished",
            )),
        }
    }
}

impl AsyncWrite for ArtifactWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.pipe() {
            Ok(pipe) => pipe.poll_write(cx, buf),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.pipe() {
            Ok(pipe) => pipe.poll_flush(cx),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    /// Flushes only: the artifact ends with [`ArtifactWriter::finish`], not with a shutdown.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.pipe() {
            Ok(pipe) => pipe.poll_flush(cx),
            Err(err) => Poll::Ready(Err(err)),
        }
    }
}
