//! Task status from the web tier: [`Producer::status`], [`Producer::wait`], [`Producer::watch`],
//! [`Producer::cancel`] and [`Producer::artifact`], plus the `queued` record written after the
//! enqueue of a tracked task.
//!
//! Records live in the KV bucket `<PREFIX>_STATUS` and artifacts in the object store
//! `<PREFIX>_ARTIFACTS` (see `docs/PROTOCOL.md` §8 and `docs/STATUS.md`). Waiting and watching use
//! a KV watch on the task's key: the server pushes every change, nothing polls.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use async_nats::jetstream::{
    kv::{self, Operation, UpdateErrorKind},
    object_store::{GetErrorKind, Object, ObjectStore},
};
use futures::{Stream, StreamExt};
use jetq_contract::{
    status::{self as wire, ArtifactInfo, ArtifactNameError, TaskState, TaskStatus},
    ProvisionError, Topology,
};
use tokio::{io::AsyncRead, sync::OnceCell};

use super::{Prepared, Producer};
use crate::Enqueued;

/// Compare-and-set rounds before a status write gives up.
const CAS_ROUNDS: usize = 8;
/// After the status bucket could not be opened (missing and not creatable, or not permitted),
/// it is not tried again for this long: a misconfiguration costs tracked enqueues one request
/// timeout per period, not one each.
const REOPEN_AFTER: Duration = Duration::from_secs(30);

/// A boxed error from the NATS client.
type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a status, wait, watch, cancel or artifact call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// The status bucket or artifact store does not exist and could not be created (a producer
    /// with `JETQ_PROVISION=false`, or one whose user may not create it).
    #[error("the jetq status store is not available: {0}")]
    Unavailable(#[source] ProvisionError),
    /// Reading the record failed (server unreachable, timeout).
    #[error("cannot read the status of task {id}: {source}")]
    Read {
        /// The task id.
        id: String,
        /// The client's error.
        source: BoxError,
    },
    /// Writing the record failed.
    #[error("cannot write the status of task {id}: {source}")]
    Write {
        /// The task id.
        id: String,
        /// The client's error.
        source: BoxError,
    },
    /// The record is not valid status JSON.
    #[error("the status record of task {id} is not valid: {source}")]
    Corrupt {
        /// The task id.
        id: String,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// No record: the task id is unknown, its type is not tracked, or its record expired.
    #[error("task {id} has no status record (unknown id, untracked type, or expired)")]
    NotFound {
        /// The task id.
        id: String,
    },
    /// [`Producer::wait`] ran out of time before the task reached a terminal state.
    #[error("task {id} did not finish within {waited:?} (last state: {})",
        .last.as_ref().map_or("none", |status| status.state.as_str()))]
    Timeout {
        /// The task id.
        id: String,
        /// How long it waited.
        waited: Duration,
        /// The last record seen, if any.
        last: Option<Box<TaskStatus>>,
    },
    /// The artifact name is not usable.
    #[error(transparent)]
    ArtifactName(#[from] ArtifactNameError),
    /// The task has no artifact by that name (never stored, or expired).
    #[error("task {id} has no artifact {name}")]
    ArtifactNotFound {
        /// The task id.
        id: String,
        /// The artifact's name.
        name: String,
    },
    /// Reading the artifact failed.
    #[error("cannot read artifact {name} of task {id}: {source}")]
    Artifact {
        /// The task id.
        id: String,
        /// The artifact's name.
        name: String,
        /// The object store's error.
        source: BoxError,
    },
}

/// What [`Producer::cancel`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// The task had not started (queued, or waiting to retry): it is now `cancelled`, and the
    /// worker that pulls it drops it without running it.
    Cancelled(Box<TaskStatus>),
    /// The task is running: its handler is told (`TaskContext::is_cancelled`) and the task ends
    /// `cancelled` when the handler returns. [`Producer::wait`] reports that end.
    Requested(Box<TaskStatus>),
    /// The task had already finished; nothing changed.
    AlreadyFinished(Box<TaskStatus>),
}

/// The status bucket and artifact store of a producer, opened on first use.
#[derive(Clone)]
pub(crate) struct StatusStores {
    topology: Topology,
    provision: bool,
    kv: Arc<OnceCell<kv::Store>>,
    objects: Arc<OnceCell<ObjectStore>>,
    /// The last failure to open the bucket: until when it is not retried, and why.
    failed: Arc<std::sync::Mutex<Option<(tokio::time::Instant, String)>>>,
}

impl std::fmt::Debug for StatusStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusStores")
            .field("bucket", &self.topology.subjects().status_bucket())
            .field("opened", &self.kv.initialized())
            .finish()
    }
}

impl StatusStores {
    pub(crate) fn new(topology: Topology, provision: bool) -> Self {
        StatusStores {
            topology,
            provision,
            kv: Arc::new(OnceCell::new()),
            objects: Arc::new(OnceCell::new()),
            failed: Arc::new(std::sync::Mutex::new(None)),
        }
    }

    fn failed(&self) -> std::sync::MutexGuard<'_, Option<(tokio::time::Instant, String)>> {
        self.failed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The status bucket for recording a tracked task's `queued` state at enqueue: after a
    /// failure to open it, enqueues do not try again for [`REOPEN_AFTER`] (a producer whose
    /// bucket is missing must not pay a lookup per enqueue).
    async fn kv_for_enqueue(&self) -> Result<&kv::Store, StatusError> {
        if self.kv.get().is_none() {
            if let Some((until, reason)) = self.failed().clone() {
                if tokio::time::Instant::now() < until {
                    return Err(StatusError::Unavailable(ProvisionError::Bucket {
                        bucket: self.topology.subjects().status_bucket(),
                        source: format!("{reason} (tried again in at most {REOPEN_AFTER:?})")
                            .into(),
                    }));
                }
            }
        }
        self.kv().await
    }

    /// True only when the server says no stream captures `subject` (a task subject, or a
    /// delayed task's). A publish that found no responders is either that or an election (the
    /// stream has no leader for a few seconds); any other answer — a stream's name, an error,
    /// no answer within `wait` — means it exists or may, and the publish keeps resending.
    pub(crate) async fn stream_missing(&self, subject: &str, wait: std::time::Duration) -> bool {
        use async_nats::jetstream::context::GetStreamByNameErrorKind;
        let asked = self.topology.jetstream().stream_by_subject(subject);
        matches!(
            tokio::time::timeout(wait, asked).await,
            Ok(Err(err)) if err.kind() == GetStreamByNameErrorKind::NotFound
        )
    }

    /// True when `subject` is a task subject (the task stream's), not a delayed task's.
    pub(crate) fn is_task_subject(&self, subject: &str) -> bool {
        self.topology.subjects().parse_task(subject).is_some()
    }

    /// Creates the task stream when provisioning is on and it is missing (deleted after this
    /// producer started, or never created because startup raced a deletion). True if the
    /// stream now exists; false when provisioning is off or creating failed (logged once per
    /// call with the reason, e.g. a NATS user not allowed to create streams).
    pub(crate) async fn provision_tasks_stream(&self) -> bool {
        if !self.provision {
            return false;
        }
        match self.topology.ensure_tasks_stream().await {
            Ok(()) => {
                tracing::info!(
                    stream = %self.topology.subjects().tasks_stream(),
                    "created the missing task stream (JETQ_PROVISION=true)"
                );
                true
            }
            Err(err) => {
                tracing::warn!(
                    error = %err,
                    "the task stream is missing and this producer could not create it"
                );
                false
            }
        }
    }

    /// Opens (creates, when provisioning is on) the status bucket before a tracked task is
    /// published. Best effort, with the enqueue backoff: the task is published either way.
    pub(crate) async fn open_before_tracked_publish(&self) {
        if let Err(err) = self.kv_for_enqueue().await {
            tracing::warn!(error = %err, "tracked task published without a status bucket");
        }
    }

    /// The status bucket; created (with the artifact store) if missing and provisioning is on.
    /// Explicit calls (status, wait, watch, cancel) always look again: the bucket may have been
    /// created since (by a worker, or `jetq-provision`).
    async fn kv(&self) -> Result<&kv::Store, StatusError> {
        if let Some(kv) = self.kv.get() {
            return Ok(kv);
        }
        let opened = self
            .kv
            .get_or_try_init(|| async {
                match self.topology.status_bucket().await {
                    Ok(kv) => Ok(kv),
                    Err(_) if self.provision => {
                        self.topology
                            .ensure_status_stores()
                            .await
                            .map_err(StatusError::Unavailable)?;
                        self.topology
                            .status_bucket()
                            .await
                            .map_err(StatusError::Unavailable)
                    }
                    Err(err) => Err(StatusError::Unavailable(err)),
                }
            })
            .await;
        if let Err(err) = &opened {
            *self.failed() = Some((tokio::time::Instant::now() + REOPEN_AFTER, err.to_string()));
        }
        opened
    }

    async fn objects(&self) -> Result<&ObjectStore, StatusError> {
        self.objects
            .get_or_try_init(|| async {
                self.topology
                    .artifact_store()
                    .await
                    .map_err(StatusError::Unavailable)
            })
            .await
    }
}

/// What the `queued` record of a tracked task needs from its enqueue.
pub(super) struct Queued {
    id: String,
    queue: String,
    task: String,
    enqueued_at: Option<String>,
    /// Published to the delayed-task stream: the ack's sequence is not the task stream's.
    delayed: bool,
}

impl Queued {
    pub(super) fn of(producer: &Producer, prepared: &Prepared) -> Option<Queued> {
        prepared.tracked.then(|| Queued {
            id: prepared.id.clone(),
            queue: prepared.queue.to_string(),
            task: prepared.task.to_string(),
            enqueued_at: Some(prepared.enqueued_at.clone()),
            delayed: producer.subjects.parse_task(&prepared.subject).is_none(),
        })
    }
}

/// Stream of a task's status records from [`Producer::watch`].
pub type StatusStream = Pin<Box<dyn Stream<Item = Result<TaskStatus, StatusError>> + Send>>;

/// An artifact being read from the artifact store; from [`Producer::artifact`].
///
/// Implements [`AsyncRead`]: the bytes arrive chunk by chunk as they are read, and the object
/// store's SHA-256 digest is checked at the end (a mismatch is an `InvalidData` error).
pub struct Artifact {
    info: ArtifactInfo,
    object: Object,
}

impl std::fmt::Debug for Artifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifact")
            .field("info", &self.info)
            .finish()
    }
}

impl Artifact {
    /// Name, size and digest.
    pub fn info(&self) -> &ArtifactInfo {
        &self.info
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.info.size
    }
}

impl AsyncRead for Artifact {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.object).poll_read(cx, buf)
    }
}

/// True if both timestamps are present, parse (docs/PROTOCOL.md §3, "Timestamps") and name the
/// same microsecond.
fn same_instant(a: Option<&str>, b: Option<&str>) -> bool {
    match (
        a.and_then(jetq_contract::time::parse),
        b.and_then(jetq_contract::time::parse),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn decode(id: &str, bytes: &[u8]) -> Result<TaskStatus, StatusError> {
    TaskStatus::from_json(bytes).map_err(|source| StatusError::Corrupt {
        id: id.to_owned(),
        source,
    })
}

impl Producer {
    /// Writes the `queued` record of a tracked task after its enqueue was acknowledged (not for
    /// a duplicate), as docs/PROTOCOL.md §8 "The producer's queued write" says: compare-and-set
    /// (create when there is no record, else update on the revision read), skipped when the
    /// record already belongs to this task or a later one (a worker was faster), and replacing
    /// a record left by an earlier task with the same id, terminal or not. Best effort: the
    /// task is queued whatever happens here.
    pub(super) async fn record_queued(&self, queued: Queued, enqueued: &Enqueued) {
        if enqueued.duplicate {
            return;
        }
        if let Err(err) = self.write_queued(&queued, enqueued.sequence).await {
            tracing::warn!(task_id = %queued.id, error = %err, "task queued, but its queued status was not recorded");
        }
    }

    async fn write_queued(&self, queued: &Queued, sequence: u64) -> Result<(), StatusError> {
        let kv = self.status.kv_for_enqueue().await?;
        let key = wire::key(&queued.id);
        let sequence = (!queued.delayed).then_some(sequence);
        let mut record = TaskStatus::new(&queued.id, &queued.queue, &queued.task);
        record.sequence = sequence;
        record.enqueued_at = queued.enqueued_at.clone();
        let bytes = record.to_json().map_err(|source| StatusError::Corrupt {
            id: queued.id.clone(),
            source,
        })?;
        for _ in 0..CAS_ROUNDS {
            let entry = kv
                .entry(key.clone())
                .await
                .map_err(|err| StatusError::Read {
                    id: queued.id.clone(),
                    source: Box::new(err),
                })?;
            let revision = match entry {
                Some(entry) if entry.operation == Operation::Put => {
                    if let Ok(existing) = TaskStatus::from_json(&entry.value) {
                        let worker_ahead = match sequence {
                            Some(sequence) => existing.sequence >= Some(sequence),
                            // A delayed task has no task-stream sequence yet: a record with
                            // one and this enqueue's time (compared as instants, since the
                            // worker may have written the time in another accepted form) is
                            // this task, released and already taken by a worker.
                            None => {
                                existing.sequence.is_some()
                                    && same_instant(
                                        existing.enqueued_at.as_deref(),
                                        queued.enqueued_at.as_deref(),
                                    )
                            }
                        };
                        if worker_ahead {
                            return Ok(());
                        }
                    }
                    entry.revision
                }
                Some(entry) => entry.revision,
                None => 0,
            };
            match kv
                .update(key.as_str(), bytes.clone().into(), revision)
                .await
            {
                Ok(_) => return Ok(()),
                Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(err) => {
                    return Err(StatusError::Write {
                        id: queued.id.clone(),
                        source: Box::new(err),
                    })
                }
            }
        }
        Err(StatusError::Write {
            id: queued.id.clone(),
            source: "the record kept changing while it was written".into(),
        })
    }

    /// The status record of task `id`; `Ok(None)` if there is none (unknown id, untracked
    /// type, or expired after `JETQ_STATUS_TTL`).
    ///
    /// ```no_run
    /// # async fn run(producer: jetq_producer::Producer) -> Result<(), jetq_producer::StatusError> {
    /// if let Some(status) = producer.status("01J9ZQ5W3V7ZB4M8K2N6P0R1S3").await? {
    ///     println!("{} (attempt {})", status.state, status.attempt);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn status(&self, id: &str) -> Result<Option<TaskStatus>, StatusError> {
        Ok(self.status_entry(id).await?.map(|(status, _)| status))
    }

    async fn status_entry(&self, id: &str) -> Result<Option<(TaskStatus, u64)>, StatusError> {
        let kv = self.status.kv().await?;
        let entry = kv
            .entry(wire::key(id))
            .await
            .map_err(|err| StatusError::Read {
                id: id.to_owned(),
                source: Box::new(err),
            })?;
        match entry {
            Some(entry) if entry.operation == Operation::Put => {
                Ok(Some((decode(id, &entry.value)?, entry.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Waits until task `id` reaches a terminal state (`succeeded`, `failed`, `dead`,
    /// `cancelled`) and returns that record; [`StatusError::Timeout`] after `timeout`.
    ///
    /// Watches the key (the server pushes each change), so it returns as soon as the worker
    /// writes the outcome, without polling. A failed task is `Ok` too: look at `state`.
    ///
    /// ```no_run
    /// # async fn run(producer: jetq_producer::Producer, id: &str) -> Result<(), jetq_producer::StatusError> {
    /// use std::time::Duration;
    /// use jetq_producer::contract::TaskState;
    /// let done = producer.wait(id, Duration::from_secs(30)).await?;
    /// if done.state == TaskState::Succeeded {
    ///     println!("result: {:?}", done.result);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<TaskStatus, StatusError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = |last: Option<TaskStatus>| StatusError::Timeout {
            id: id.to_owned(),
            waited: timeout,
            last: last.map(Box::new),
        };
        let mut stream = match tokio::time::timeout_at(deadline, self.watch(id)).await {
            Ok(stream) => stream?,
            Err(_) => return Err(timed_out(None)),
        };
        let mut last = None;
        loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => return Err(timed_out(last)),
                Ok(None) => {
                    // The watch ends only after a terminal record.
                    return last.ok_or_else(|| StatusError::NotFound { id: id.to_owned() });
                }
                Ok(Some(Err(err))) => return Err(err),
                Ok(Some(Ok(status))) => {
                    if status.state.is_terminal() {
                        return Ok(status);
                    }
                    last = Some(status);
                }
            }
        }
    }

    /// Every version of task `id`'s record: the current one (if any), then each change as the
    /// server pushes it (state changes and progress reports), ending after a terminal state.
    /// For a progress bar or a server-sent-events endpoint.
    ///
    /// ```no_run
    /// # async fn run(producer: jetq_producer::Producer, id: &str) -> Result<(), jetq_producer::StatusError> {
    /// use futures::StreamExt;
    /// let mut updates = producer.watch(id).await?;
    /// while let Some(status) = updates.next().await {
    ///     let status = status?;
    ///     if let Some(progress) = &status.progress {
    ///         println!("{}: {:.0}% {}", status.state, progress.percent, progress.message);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn watch(&self, id: &str) -> Result<StatusStream, StatusError> {
        let kv = self.status.kv().await?;
        let watch =
            kv.watch_with_history(wire::key(id))
                .await
                .map_err(|err| StatusError::Read {
                    id: id.to_owned(),
                    source: Box::new(err),
                })?;
        let id = id.to_owned();
        let stream = futures::stream::unfold(Some(watch), move |watch| {
            let id = id.clone();
            async move {
                let mut watch = watch?;
                loop {
                    match watch.next().await? {
                        Ok(entry) if entry.operation == Operation::Put => {
                            let status = decode(&id, &entry.value);
                            let last = matches!(&status, Ok(s) if s.state.is_terminal());
                            return Some((status, (!last).then_some(watch)));
                        }
                        // A purge or delete (expiry): no record to report.
                        Ok(_) => continue,
                        Err(err) => {
                            let err = StatusError::Read {
                                id: id.clone(),
                                source: Box::new(err),
                            };
                            return Some((Err(err), None));
                        }
                    }
                }
            }
        });
        Ok(Box::pin(stream))
    }

    /// Cancels task `id`: a task that has not started (queued, or waiting to retry) becomes
    /// `cancelled` at once and is dropped, not run, when a worker pulls it; a running task's
    /// handler is told through its context (cooperative) and the task ends `cancelled` when the
    /// handler returns. A finished task is left as it is.
    ///
    /// Only tracked tasks can be cancelled ([`StatusError::NotFound`] otherwise).
    ///
    /// ```no_run
    /// # async fn run(producer: jetq_producer::Producer, id: &str) -> Result<(), jetq_producer::StatusError> {
    /// use jetq_producer::CancelOutcome;
    /// match producer.cancel(id).await? {
    ///     CancelOutcome::Cancelled(_) => println!("dropped before it ran"),
    ///     CancelOutcome::Requested(_) => println!("the running handler was told to stop"),
    ///     CancelOutcome::AlreadyFinished(status) => println!("too late: {}", status.state),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn cancel(&self, id: &str) -> Result<CancelOutcome, StatusError> {
        let kv = self.status.kv().await?;
        let key = wire::key(id);
        for _ in 0..CAS_ROUNDS {
            let (mut status, revision) = self
                .status_entry(id)
                .await?
                .ok_or_else(|| StatusError::NotFound { id: id.to_owned() })?;
            if status.state.is_terminal() {
                return Ok(CancelOutcome::AlreadyFinished(Box::new(status)));
            }
            let running = status.state == TaskState::Running;
            if running {
                if status.cancel_requested_at.is_some() {
                    return Ok(CancelOutcome::Requested(Box::new(status)));
                }
                let now = jetq_contract::time::now();
                status.cancel_requested_at = Some(now.clone());
                status.updated_at = now;
            } else {
                status.enter(TaskState::Cancelled, None);
            }
            let bytes = status.to_json().map_err(|source| StatusError::Corrupt {
                id: id.to_owned(),
                source,
            })?;
            match kv.update(key.as_str(), bytes.into(), revision).await {
                Ok(_) if running => return Ok(CancelOutcome::Requested(Box::new(status))),
                Ok(_) => return Ok(CancelOutcome::Cancelled(Box::new(status))),
                // A worker wrote in between (it started, progressed or finished): look again.
                Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(err) => {
                    return Err(StatusError::Write {
                        id: id.to_owned(),
                        source: Box::new(err),
                    })
                }
            }
        }
        Err(StatusError::Write {
            id: id.to_owned(),
            source: "the record kept changing while the cancellation was written".into(),
        })
    }

    /// Opens artifact `name` of task `id` for reading, streamed chunk by chunk from the artifact
    /// store: the web tier needs no disk shared with the workers.
    ///
    /// ```no_run
    /// # async fn run(producer: jetq_producer::Producer, id: &str) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut csv = producer.artifact(id, "export.csv").await?;
    /// let mut out = tokio::fs::File::create("/tmp/export.csv").await?;
    /// tokio::io::copy(&mut csv, &mut out).await?;
    /// # Ok(()) }
    /// ```
    pub async fn artifact(&self, id: &str, name: &str) -> Result<Artifact, StatusError> {
        wire::validate_artifact_name(name)?;
        let not_found = || StatusError::ArtifactNotFound {
            id: id.to_owned(),
            name: name.to_owned(),
        };
        let objects = match self.status.objects().await {
            Ok(objects) => objects,
            Err(StatusError::Unavailable(_)) => return Err(not_found()),
            Err(err) => return Err(err),
        };
        let object = objects
            .get(wire::artifact_object(id, name))
            .await
            .map_err(|err| match err.kind() {
                GetErrorKind::NotFound => not_found(),
                _ => StatusError::Artifact {
                    id: id.to_owned(),
                    name: name.to_owned(),
                    source: Box::new(err),
                },
            })?;
        let info = ArtifactInfo {
            name: name.to_owned(),
            size: u64::try_from(object.info().size).unwrap_or(u64::MAX),
            digest: object.info().digest.clone(),
        };
        Ok(Artifact { info, object })
    }
}
