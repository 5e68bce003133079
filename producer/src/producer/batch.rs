//! Batches, chords and chains from the producer (PROTOCOL.md §13, docs/WORKFLOWS.md).
//!
//! A batch is enqueued in three steps: its record is created in `<PREFIX>_BATCHES` (state
//! `enqueuing`), its members are published (in atomic batches where the server has them, as
//! `enqueue_many` does), then the record is closed (or left open for more members). The workers
//! count the members as they end and fire the callbacks; the producer only fires them itself
//! when every member had already ended by the time it closed the batch.

use std::sync::Arc;

use async_nats::HeaderMap;
use bytes::Bytes;
use jetq_contract::{
    publish::Publisher,
    workflow::{
        self,
        batch::{BatchRecord, BatchState, Callback},
        chain::{ChainLink, ChainRecord},
        engine::{Created, Workflows},
        MemberOutcome, WorkflowError,
    },
    Task, Topology,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{Producer, RawTask};
use crate::{EnqueueError, EnqueueOptions, Enqueued};

/// The workflow bucket of a producer, opened (or created, where it provisions) on first use.
#[derive(Clone)]
pub(crate) struct WorkflowStore {
    topology: Topology,
    provision: bool,
    engine: Arc<tokio::sync::OnceCell<Workflows>>,
}

impl std::fmt::Debug for WorkflowStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowStore").finish_non_exhaustive()
    }
}

impl WorkflowStore {
    pub(crate) fn new(topology: Topology, provision: bool) -> Self {
        WorkflowStore {
            topology,
            provision,
            engine: Arc::default(),
        }
    }

    async fn engine(&self, attempts: u32) -> Result<&Workflows, EnqueueError> {
        self.engine
            .get_or_try_init(|| async {
                let store = workflow::engine::open_bucket(&self.topology, self.provision)
                    .await
                    .map_err(store_error)?;
                let js = self.topology.jetstream().clone();
                let window =
                    workflow::engine::duplicate_window(&js, self.topology.subjects()).await;
                Ok(Workflows::new(
                    store,
                    Publisher::new(js, attempts),
                    self.topology.subjects().clone(),
                    window,
                ))
            })
            .await
    }
}

fn store_error(reason: impl std::fmt::Display) -> EnqueueError {
    EnqueueError::Workflow {
        reason: reason.to_string(),
    }
}

/// How a batch is made.
///
/// ```
/// use jetq_producer::BatchOptions;
/// let options = BatchOptions::new().id("export-42").chord();
/// ```
#[derive(Debug, Clone, Default)]
pub struct BatchOptions {
    id: Option<String>,
    keep_open: bool,
    parent: Option<String>,
    chord: bool,
    skip_callback_check: bool,
}

impl BatchOptions {
    /// Defaults: a fresh id (a ULID), closed by its enqueue, no parent, no results.
    pub fn new() -> Self {
        Self::default()
    }

    /// The batch id (`[A-Za-z0-9_-]{1,64}`). A batch with this id already existing makes the
    /// enqueue fail with [`EnqueueError::BatchExists`] — except one left `enqueuing` by an
    /// enqueue that stopped half-way, which this enqueue takes over (give members keys, so
    /// those already published are not published twice).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Leave the batch open after its enqueue: [`Producer::batch_add`] adds members, and the
    /// callbacks wait for [`Producer::batch_close`].
    pub fn keep_open(mut self) -> Self {
        self.keep_open = true;
        self
    }

    /// Make this batch a member of batch `parent` (which must be open): the parent counts it
    /// as one member, finished when this batch completes (succeeded if every member of this
    /// one succeeded).
    pub fn parent(mut self, parent: impl Into<String>) -> Self {
        self.parent = Some(parent.into());
        self
    }

    /// A chord: the members are tracked and the callbacks receive their results
    /// ([`BatchSummary::results`](jetq_contract::workflow::BatchSummary)).
    pub fn chord(mut self) -> Self {
        self.chord = true;
        self
    }

    /// Do not check the callbacks' types in the task-type catalog (see
    /// [`EnqueueError::UnknownCallback`]).
    pub fn skip_callback_check(mut self) -> Self {
        self.skip_callback_check = true;
        self
    }
}

/// A batch being built: members and callbacks, then [`Batch::enqueue`].
#[derive(Debug)]
#[must_use = "a batch does nothing until it is enqueued"]
pub struct Batch {
    producer: Producer,
    options: BatchOptions,
    members: Vec<RawTask>,
    on_success: Option<Callback>,
    on_complete: Option<Callback>,
    /// The first error of a builder call, reported by `enqueue`.
    error: Option<EnqueueError>,
}

/// A batch that was enqueued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchHandle {
    /// The batch id.
    pub id: String,
    /// Its members as enqueued, in the order they were added.
    pub members: Vec<Enqueued>,
}

/// How far a batch is, counted from its members' markers (exact; reading them costs one
/// message per finished member).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchStatus {
    /// The batch id.
    pub id: String,
    /// `enqueuing`, `open` or `closed`.
    pub state: BatchState,
    /// Members.
    pub total: u64,
    /// Members not finished yet: `running` + `queued`.
    pub pending: u64,
    /// Of the pending members, those a live worker runs now, from the workers' presence
    /// records (PROTOCOL.md §14): as fresh as the presence interval (10 s by default), see
    /// docs/WORKFLOWS.md "Status". 0 where no worker writes presence.
    pub running: u64,
    /// Of the pending members, those not running: queued, or waiting for a retry.
    pub queued: u64,
    /// Members that succeeded.
    pub succeeded: u64,
    /// Members dead-lettered or cancelled.
    pub dead: u64,
    /// `on_complete` fired (every member finished).
    pub completed: bool,
    /// `on_success` fired (every member succeeded).
    pub succeeded_all: bool,
    /// The parent batch, if nested.
    pub parent: Option<String>,
}

fn callback<T: Task>(task: &T) -> Result<Callback, EnqueueError> {
    let args = serde_json::to_value(task).map_err(|source| EnqueueError::Serialize {
        task: T::NAME.to_owned(),
        source,
    })?;
    Ok(Callback::new(T::QUEUE, T::NAME, args)?)
}

fn raw<T: Task>(task: &T, options: EnqueueOptions) -> Result<RawTask, EnqueueError> {
    let payload = serde_json::to_vec(task).map_err(|source| EnqueueError::Serialize {
        task: T::NAME.to_owned(),
        source,
    })?;
    let mut options = options;
    options.track_status |= T::options().track_status;
    Ok(RawTask {
        queue: T::QUEUE.to_owned(),
        task: T::NAME.to_owned(),
        payload: Bytes::from(payload),
        options,
    })
}

/// The W3C context of the caller's current span, as `traceparent` and `tracestate`.
fn current_trace() -> (Option<String>, Option<String>) {
    let context = tracing::Span::current().context();
    let mut headers = HeaderMap::new();
    if !jetq_contract::otel::inject(&context, &mut headers) {
        return (None, None);
    }
    let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    (
        get(jetq_contract::headers::TRACEPARENT),
        get(jetq_contract::headers::TRACESTATE),
    )
}

impl Batch {
    fn keep<T>(&mut self, result: Result<T, EnqueueError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(err) => {
                self.error.get_or_insert(err);
                None
            }
        }
    }

    /// Adds a member.
    #[allow(clippy::should_implement_trait)] // a builder step, not arithmetic
    pub fn add<T: Task>(self, task: &T) -> Self {
        self.add_with(task, EnqueueOptions::default())
    }

    /// Adds a member with options (an idempotency key makes a retried enqueue exact).
    pub fn add_with<T: Task>(mut self, task: &T, options: EnqueueOptions) -> Self {
        if let Some(member) = self.keep(raw(task, options)) {
            self.members.push(member);
        }
        self
    }

    /// Adds an untyped member.
    pub fn add_raw(mut self, task: RawTask) -> Self {
        self.members.push(task);
        self
    }

    /// The task enqueued once when every member succeeded; its arguments get the summary as
    /// field `batch` (declare `batch: BatchSummary` with `#[serde(default)]`).
    pub fn on_success<T: Task>(mut self, task: &T) -> Self {
        self.on_success = self.keep(callback(task));
        self
    }

    /// The task enqueued once when every member finished, some perhaps dead-lettered.
    pub fn on_complete<T: Task>(mut self, task: &T) -> Self {
        self.on_complete = self.keep(callback(task));
        self
    }

    /// An untyped `on_success` callback (its arguments a JSON object).
    pub fn on_success_raw(mut self, queue: &str, task: &str, args: serde_json::Value) -> Self {
        self.on_success = self.keep(Callback::new(queue, task, args).map_err(Into::into));
        self
    }

    /// An untyped `on_complete` callback (its arguments a JSON object).
    pub fn on_complete_raw(mut self, queue: &str, task: &str, args: serde_json::Value) -> Self {
        self.on_complete = self.keep(Callback::new(queue, task, args).map_err(Into::into));
        self
    }

    /// Creates the batch and enqueues its members. Returns once every member is stored.
    ///
    /// Errors: [`EnqueueError::BatchExists`], [`EnqueueError::UnknownCallback`],
    /// [`EnqueueError::MembersNotEnqueued`] (some members are queued: enqueue the batch again
    /// with the same id and member keys), or any error of a single enqueue.
    pub async fn enqueue(self) -> Result<BatchHandle, EnqueueError> {
        if let Some(err) = self.error {
            return Err(err);
        }
        let producer = self.producer;
        let options = self.options;
        let id = options
            .id
            .clone()
            .unwrap_or_else(|| ulid::Ulid::new().to_string());
        workflow::validate_id("batch", &id)?;
        if let Some(parent) = &options.parent {
            workflow::validate_id("batch", parent)?;
        }
        for member in &self.members {
            jetq_contract::name::validate(jetq_contract::NameKind::Queue, &member.queue)?;
            jetq_contract::name::validate(jetq_contract::NameKind::Task, &member.task)?;
        }
        if !options.skip_callback_check {
            for callback in [&self.on_success, &self.on_complete].into_iter().flatten() {
                producer.check_callback(callback).await?;
            }
        }
        let engine = producer.workflows.engine(producer.attempts).await?;
        let mut record = BatchRecord::new(&id, self.members.len() as u64);
        record.on_success = self.on_success;
        record.on_complete = self.on_complete;
        record.chord = options.chord;
        record.parent = options.parent.clone();
        (record.traceparent, record.tracestate) = current_trace();
        match engine.create_batch(&record).await.map_err(store_error)? {
            Created::New => {
                if let Some(parent) = &options.parent {
                    if let Err(err) = engine.grow(parent, 1).await {
                        // Nothing was published: leave no record, so a retry starts afresh.
                        if let Err(err) = engine.abandon(&id).await {
                            tracing::warn!(batch = %id, error = %err, "could not delete the batch record");
                        }
                        return Err(store_error(format!("cannot join batch {parent}: {err}")));
                    }
                }
            }
            Created::TakenOver => {
                tracing::info!(batch = %id, "taking over a batch whose enqueue stopped half-way");
            }
            Created::Exists(_) => return Err(EnqueueError::BatchExists { id }),
        }
        let members = producer
            .enqueue_members(&id, options.chord, self.members)
            .await?;
        let state = if options.keep_open {
            BatchState::Open
        } else {
            BatchState::Closed
        };
        engine.set_state(&id, state).await.map_err(store_error)?;
        Ok(BatchHandle { id, members })
    }
}

/// A chain being built: links in order, then [`Producer::enqueue_chain`].
///
/// ```
/// # use jetq_contract::Task;
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Export { id: u64 }
/// # impl Task for Export { const NAME: &'static str = "export"; const QUEUE: &'static str = "exports"; }
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Mail { to: String, #[serde(default)] previous: serde_json::Value }
/// # impl Task for Mail { const NAME: &'static str = "mail"; const QUEUE: &'static str = "emails"; }
/// let chain = jetq_producer::Chain::new()
///     .then(&Export { id: 42 })
///     .then_with_previous(&Mail { to: "ada@example.com".into(), previous: Default::default() });
/// ```
#[derive(Debug, Default)]
#[must_use = "a chain does nothing until it is enqueued"]
pub struct Chain {
    id: Option<String>,
    links: Vec<ChainLink>,
    error: Option<EnqueueError>,
}

impl Chain {
    /// An empty chain with a fresh id.
    pub fn new() -> Self {
        Self::default()
    }

    /// The chain id (`[A-Za-z0-9_-]{1,64}`); an existing chain with this id makes the enqueue
    /// fail with [`EnqueueError::ChainExists`].
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    fn link<T: Task>(mut self, task: &T, with_previous: bool) -> Self {
        match serde_json::to_value(task) {
            Ok(args) => self.links.push(ChainLink {
                queue: T::QUEUE.to_owned(),
                task: T::NAME.to_owned(),
                args,
                with_previous,
            }),
            Err(source) => {
                self.error.get_or_insert(EnqueueError::Serialize {
                    task: T::NAME.to_owned(),
                    source,
                });
            }
        }
        self
    }

    /// The next link: runs after the previous one succeeded.
    pub fn then<T: Task>(self, task: &T) -> Self {
        self.link(task, false)
    }

    /// The next link, given the previous link's result (its handler's `ctx.set_result`) as
    /// field `previous` of its arguments (`null` if it left none). The previous link is tracked.
    pub fn then_with_previous<T: Task>(self, task: &T) -> Self {
        self.link(task, true)
    }

    /// An untyped link.
    pub fn then_raw(
        mut self,
        queue: &str,
        task: &str,
        args: serde_json::Value,
        with_previous: bool,
    ) -> Self {
        self.links.push(ChainLink {
            queue: queue.to_owned(),
            task: task.to_owned(),
            args,
            with_previous,
        });
        self
    }
}

/// A chain that was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHandle {
    /// The chain id.
    pub id: String,
}

impl Producer {
    /// A new batch (see [`Batch`]).
    ///
    /// ```no_run
    /// # use jetq_contract::Task;
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Chunk { n: u64 }
    /// # impl Task for Chunk { const NAME: &'static str = "chunk"; const QUEUE: &'static str = "exports"; }
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Assemble { export: u64, #[serde(default)] batch: jetq_contract::workflow::BatchSummary }
    /// # impl Task for Assemble { const NAME: &'static str = "assemble"; const QUEUE: &'static str = "exports"; }
    /// # async fn run(producer: jetq_producer::Producer) -> Result<(), jetq_producer::EnqueueError> {
    /// let batch = producer
    ///     .batch(jetq_producer::BatchOptions::new().chord())
    ///     .add(&Chunk { n: 0 })
    ///     .add(&Chunk { n: 1 })
    ///     .on_success(&Assemble { export: 42, batch: Default::default() })
    ///     .enqueue()
    ///     .await?;
    /// println!("batch {}", batch.id);
    /// # Ok(()) }
    /// ```
    pub fn batch(&self, options: BatchOptions) -> Batch {
        Batch {
            producer: self.clone(),
            options,
            members: Vec::new(),
            on_success: None,
            on_complete: None,
            error: None,
        }
    }

    /// Adds members to an open batch ([`BatchOptions::keep_open`]). The batch's total grows
    /// first, so it cannot complete without them; if some are not enqueued
    /// ([`EnqueueError::MembersNotEnqueued`]), enqueue those again with the same keys through
    /// [`Producer::batch_retry_members`], or the batch never completes.
    pub async fn batch_add(
        &self,
        id: &str,
        members: Vec<RawTask>,
    ) -> Result<Vec<Enqueued>, EnqueueError> {
        workflow::validate_id("batch", id)?;
        let engine = self.workflows.engine(self.attempts).await?;
        let record = engine
            .grow(id, members.len() as u64)
            .await
            .map_err(store_error)?;
        self.enqueue_members(id, record.chord, members).await
    }

    /// Enqueues members of a batch again after [`EnqueueError::MembersNotEnqueued`], without
    /// growing its total (give them the keys they had: those already queued are deduplicated).
    pub async fn batch_retry_members(
        &self,
        id: &str,
        members: Vec<RawTask>,
    ) -> Result<Vec<Enqueued>, EnqueueError> {
        workflow::validate_id("batch", id)?;
        let engine = self.workflows.engine(self.attempts).await?;
        let record = engine
            .batch(id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| store_error(format!("no batch {id}")))?;
        self.enqueue_members(id, record.chord, members).await
    }

    /// Closes an open batch: no more members; the callbacks fire when the members are done
    /// (at once, from here, if they already are).
    pub async fn batch_close(&self, id: &str) -> Result<(), EnqueueError> {
        workflow::validate_id("batch", id)?;
        let engine = self.workflows.engine(self.attempts).await?;
        engine
            .set_state(id, BatchState::Closed)
            .await
            .map_err(store_error)
    }

    /// A batch's status; `None` if there is no such batch (or its record expired).
    pub async fn batch_status(&self, id: &str) -> Result<Option<BatchStatus>, EnqueueError> {
        workflow::validate_id("batch", id)?;
        let engine = self.workflows.engine(self.attempts).await?;
        let Some(record) = engine.batch(id).await.map_err(store_error)? else {
            return Ok(None);
        };
        let markers = engine.markers(id).await.map_err(store_error)?;
        let succeeded = markers
            .iter()
            .filter(|(_, m)| m.outcome == MemberOutcome::Succeeded)
            .count() as u64;
        let dead = markers.len() as u64 - succeeded;
        let pending = record.total.saturating_sub(markers.len() as u64);
        let running = if pending == 0 {
            0
        } else {
            // Best effort: without presence (no bucket, no right to read it) nothing is
            // known to run.
            let workers = jetq_contract::presence::read_records(&self.js, &self.subjects)
                .await
                .unwrap_or_else(|err| {
                    tracing::debug!(error = %err, "batch status without worker presence");
                    Vec::new()
                });
            let finished = markers.iter().map(|(member, _)| member.as_str()).collect();
            (jetq_contract::presence::running_members(&workers, id, &finished).len() as u64)
                .min(pending)
        };
        Ok(Some(BatchStatus {
            id: record.id.clone(),
            state: record.state,
            total: record.total,
            pending,
            running,
            queued: pending - running,
            succeeded,
            dead,
            completed: record
                .completed
                .as_ref()
                .is_some_and(|f| f.done_at.is_some()),
            succeeded_all: record
                .succeeded_all
                .as_ref()
                .is_some_and(|f| f.done_at.is_some()),
            parent: record.parent,
        }))
    }

    /// Starts a chain: its record is created and its first link enqueued; each link enqueues
    /// the next when it succeeds (docs/WORKFLOWS.md).
    pub async fn enqueue_chain(&self, chain: Chain) -> Result<ChainHandle, EnqueueError> {
        if let Some(err) = chain.error {
            return Err(err);
        }
        let id = chain.id.unwrap_or_else(|| ulid::Ulid::new().to_string());
        for link in &chain.links {
            jetq_contract::name::validate(jetq_contract::NameKind::Queue, &link.queue)?;
            jetq_contract::name::validate(jetq_contract::NameKind::Task, &link.task)?;
        }
        let mut record = ChainRecord::new(&id, chain.links)?;
        (record.traceparent, record.tracestate) = current_trace();
        if (0..record.links.len()).any(|index| record.tracks(index)) {
            // A link whose result the next one takes is tracked: open the status bucket first,
            // as before any tracked publish.
            self.status.open_before_tracked_publish().await;
        }
        let engine = self.workflows.engine(self.attempts).await?;
        if !engine.start_chain(&record).await.map_err(store_error)? {
            return Err(EnqueueError::ChainExists { id });
        }
        Ok(ChainHandle { id })
    }

    /// A chain's record (its links, where it is, where it stopped); `None` if there is none.
    pub async fn chain_status(&self, id: &str) -> Result<Option<ChainRecord>, EnqueueError> {
        workflow::validate_id("chain", id)?;
        let engine = self.workflows.engine(self.attempts).await?;
        engine.chain(id).await.map_err(store_error)
    }

    /// A callback's type must be known to the task-type catalog when there is one.
    async fn check_callback(&self, callback: &Callback) -> Result<(), EnqueueError> {
        let bucket = jetq_contract::catalog::bucket(&self.subjects);
        let Ok(store) = self.js.get_key_value(bucket).await else {
            // No catalog: nothing to check against (documented).
            return Ok(());
        };
        let key = jetq_contract::catalog::key(&callback.queue, &callback.task);
        match store.get(key).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(EnqueueError::UnknownCallback {
                queue: callback.queue.clone(),
                task: callback.task.clone(),
            }),
            // Unreadable: unknown, never a reason to refuse (as for tracking).
            Err(_) => Ok(()),
        }
    }

    /// Publishes a batch's members with `Jetq-Batch` (tracked for a chord).
    async fn enqueue_members(
        &self,
        id: &str,
        chord: bool,
        members: Vec<RawTask>,
    ) -> Result<Vec<Enqueued>, EnqueueError> {
        let batch: Arc<str> = Arc::from(id);
        let members = members.into_iter().map(|mut member| {
            member.options.batch = Some(batch.clone());
            member.options.track_status |= chord;
            member
        });
        let results = self.enqueue_many_raw(members).await;
        let mut enqueued = Vec::with_capacity(results.len());
        let mut failed = 0;
        let mut first = None;
        for result in results {
            match result {
                Ok(done) => enqueued.push(done),
                Err(err) => {
                    failed += 1;
                    first.get_or_insert(err);
                }
            }
        }
        match first {
            None => Ok(enqueued),
            Some(first) => Err(EnqueueError::MembersNotEnqueued {
                id: id.to_owned(),
                failed,
                first: Box::new(first),
            }),
        }
    }
}

impl From<WorkflowError> for EnqueueError {
    fn from(err: WorkflowError) -> Self {
        EnqueueError::InvalidWorkflow(err)
    }
}
