//! The [`Producer`]: turns tasks into JetStream publishes and waits for their acks.
//!
//! Its parts are child modules in `producer/`: `prepared` (a task made into a message),
//! `atomic` and `coalesce` (atomic batches and the group commit of concurrent enqueues),
//! `delayed` (enqueue_in / enqueue_at), `status` (tracked tasks), `unique` (unique keys),
//! `publish` (one task's publish until acknowledged, and the publish errors).

use std::{borrow::Cow, collections::HashMap, time::Duration};

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use bytes::Bytes;
use futures::{stream::FuturesUnordered, StreamExt};
use jetq_contract::{ConnectionConfig, StreamSettings, Subjects, Task, Topology};
use opentelemetry::metrics::Meter;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

mod atomic;
pub(crate) mod batch;
mod chord;
mod coalesce;
pub(crate) mod delayed;
mod prepared;
mod publish;
pub(crate) mod status;
pub(crate) mod unique;

use self::prepared::Prepared;
use crate::{
    error::{EnqueueError, ProducerError},
    options::{EnqueueOptions, Enqueued},
    settings::ProducerSettings,
    telemetry::{self, ProducerMetrics},
};

/// Atomic batches of one `enqueue_many` whose commits are awaited at once.
const BATCHES_IN_FLIGHT: usize = 4;

/// The results of a many-task enqueue, in input order.
fn collect(
    results: Vec<Option<Result<Enqueued, EnqueueError>>>,
) -> Vec<Result<Enqueued, EnqueueError>> {
    results
        .into_iter()
        .map(|slot| {
            slot.unwrap_or_else(|| {
                // Every index is filled by the callers; this would be a bug in them.
                Err(EnqueueError::NoStream {
                    subject: "(internal error: missing result)".into(),
                })
            })
        })
        .collect()
}

/// Builds a [`Producer`]; every setting has a default.
///
/// ```no_run
/// # async fn run() -> Result<(), jetq_producer::ProducerError> {
/// let producer = jetq_producer::Producer::builder()
///     .url("nats://127.0.0.1:4222")
///     .enqueue_window(512)
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ProducerBuilder {
    connection: ConnectionConfig,
    streams: StreamSettings,
    settings: ProducerSettings,
    client: Option<async_nats::Client>,
    meter: Option<Meter>,
}

impl ProducerBuilder {
    /// Server URL(s), comma separated.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.connection.nats_url = url.into();
        self
    }

    /// The whole connection configuration (URLs, credentials, TLS, prefix, timeouts).
    pub fn connection(mut self, connection: ConnectionConfig) -> Self {
        self.connection = connection;
        self
    }

    /// Stream settings used when provisioning the task stream.
    pub fn streams(mut self, streams: StreamSettings) -> Self {
        self.streams = streams;
        self
    }

    /// Producer settings.
    pub fn settings(mut self, settings: ProducerSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Whether to create or reconcile the task stream at startup (default true).
    pub fn provision(mut self, provision: bool) -> Self {
        self.settings.provision = provision;
        self
    }

    /// Outstanding publish acks in `enqueue_many` (default 256, at least 1).
    pub fn enqueue_window(mut self, window: usize) -> Self {
        self.settings.enqueue_window = window.max(1);
        self
    }

    /// Store `enqueue_many` in atomic batches on nats-server 2.12+ (default true; see
    /// `JETQ_ATOMIC_BATCHES` in [`ProducerSettings`]).
    pub fn atomic_batches(mut self, atomic: bool) -> Self {
        self.settings.atomic_batches = atomic;
        self
    }

    /// When concurrent `enqueue` calls share atomic batches (default [`GroupCommit::Auto`]:
    /// when batches were measured answering sooner; see `JETQ_GROUP_COMMIT` in
    /// [`ProducerSettings`]).
    ///
    /// [`GroupCommit::Auto`]: crate::GroupCommit::Auto
    pub fn group_commit(mut self, mode: crate::GroupCommit) -> Self {
        self.settings.group_commit = mode;
        self
    }

    /// Publish attempts per task when an ack times out (default 3, at least 1).
    pub fn publish_attempts(mut self, attempts: u32) -> Self {
        self.settings.publish_attempts = attempts.max(1);
        self
    }

    /// Longest delay `enqueue_in`/`enqueue_at` accept (default 30 days); longer ones are
    /// refused before anything is sent. Same as `JETQ_MAX_DELAY`.
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.settings.max_delay = max;
        self
    }

    /// Uses an existing client instead of connecting (its server version is still checked).
    pub fn client(mut self, client: async_nats::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// The OpenTelemetry meter the producer's metrics are recorded with (default: the global
    /// meter provider's `jetq-producer` meter, as it is when `connect` is called).
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Connects (or adopts the given client), checks the server and provisions if asked.
    pub async fn connect(self) -> Result<Producer, ProducerError> {
        self.connection.validate()?;
        self.streams.validate()?;
        self.settings.validate()?;
        let subjects = self.connection.subjects()?;
        let client = jetq_contract::bootstrap::connect_or_adopt(
            &self.connection,
            self.client,
            "jetq-producer",
        )
        .await?;
        let js = jetq_contract::jetstream(client.clone(), &self.connection);
        if self.settings.provision {
            Topology::new(js.clone(), subjects.clone(), self.streams.clone())
                .ensure_tasks_stream()
                .await?;
        }
        let topology = Topology::new(js.clone(), subjects.clone(), self.streams.clone());
        let atomic = atomic::AtomicBatches::new(
            self.settings.atomic_batches && topology.supports_atomic_batches(),
        );
        let unique = unique::UniqueStore::new(topology.clone(), self.settings.provision);
        let workflows = batch::WorkflowStore::new(topology.clone(), self.settings.provision);
        let status = status::StatusStores::new(topology, self.settings.provision);
        let catalog = crate::catalog::Catalog::new(js.clone(), &subjects);
        let meter = self.meter.unwrap_or_else(telemetry::meter);
        let mut producer = Producer {
            status,
            catalog,
            client,
            js,
            subjects,
            metrics: ProducerMetrics::new(&meter),
            ack_timeout: self.connection.request_timeout,
            window: self.settings.enqueue_window.max(1),
            attempts: self.settings.publish_attempts.max(1),
            max_delay: self.settings.max_delay,
            atomic: std::sync::Arc::new(atomic),
            coalescer: None,
            unique,
            workflows,
            chord_results: Default::default(),
        };
        if producer.atomic.enabled() && self.settings.group_commit != crate::GroupCommit::Off {
            let coalescer =
                coalesce::Coalescer::start(producer.clone(), self.settings.group_commit);
            producer.coalescer = Some(std::sync::Arc::new(coalescer));
        }
        Ok(producer)
    }
}

/// Enqueues tasks. Cheap to clone: clones share one connection.
///
/// Every enqueue returns only after JetStream acknowledged the task (it is stored, under the
/// stream's fsync policy), so an `Ok` from a request handler means the task will run.
///
/// ```no_run
/// use jetq_contract::Task;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct SendEmail { to: String }
/// impl Task for SendEmail {
///     const NAME: &'static str = "send_email";
///     const QUEUE: &'static str = "emails";
/// }
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let producer = jetq_producer::Producer::from_env()?.connect().await?;
/// let enqueued = producer.enqueue(&SendEmail { to: "a@example.com".into() }).await?;
/// println!("queued task {}", enqueued.id);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Producer {
    /// Status bucket and artifact store, opened on first use.
    status: status::StatusStores,
    /// The task-type catalog: a type its workers track is tracked whatever the caller asked.
    catalog: crate::catalog::Catalog,
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    metrics: ProducerMetrics,
    ack_timeout: Duration,
    window: usize,
    attempts: u32,
    max_delay: Duration,
    /// Whether `enqueue_many` stores tasks in atomic batches (see `atomic.rs`).
    atomic: std::sync::Arc<atomic::AtomicBatches>,
    /// Gathers concurrent `enqueue` calls into atomic batches (see `coalesce.rs`); `None` where
    /// batches are off, and in the coalescing task's own clone.
    coalescer: Option<std::sync::Arc<coalesce::Coalescer>>,
    /// The unique-key bucket, opened on the first task with a unique key (see `unique.rs`).
    unique: unique::UniqueStore,
    /// The batch and chain bucket, opened on the first batch or chain (see `batch.rs`).
    workflows: batch::WorkflowStore,
    /// The results store of chords, opened on the first result read by reference (`chord.rs`).
    chord_results:
        std::sync::Arc<tokio::sync::OnceCell<jetq_contract::workflow::results::ChordResults>>,
}

/// An untyped task: what other languages send, and what the CLI and the scheduler enqueue.
#[derive(Debug, Clone)]
pub struct RawTask {
    /// Queue name.
    pub queue: String,
    /// Task wire name.
    pub task: String,
    /// JSON arguments, sent as the body unchanged.
    pub payload: Bytes,
    /// Per-task options.
    pub options: EnqueueOptions,
}

impl Producer {
    /// A builder with defaults (`nats://127.0.0.1:4222`, prefix `jetq`, provisioning on).
    pub fn builder() -> ProducerBuilder {
        ProducerBuilder::default()
    }

    /// A builder configured from `JETQ_*` environment variables (as [`Worker::from_env`] in
    /// `jetq-consumer`): change what the environment does not say, then
    /// [`connect`](ProducerBuilder::connect). A variable that does not parse is an error here,
    /// naming it.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let producer = jetq_producer::Producer::from_env()?
    ///     .publish_attempts(5) // whatever JETQ_PUBLISH_ATTEMPTS says
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// [`Worker::from_env`]: https://docs.rs/jetq-consumer/latest/jetq_consumer/struct.Worker.html#method.from_env
    pub fn from_env() -> Result<ProducerBuilder, ProducerError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        let settings = ProducerSettings::from_env_iter(vars.clone())?;
        Ok(Producer::builder()
            .connection(ConnectionConfig::from_env_iter(vars.clone())?)
            .streams(StreamSettings::from_env_iter(vars)?)
            .settings(settings))
    }

    /// The subjects this producer publishes to.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The underlying client, e.g. for health checks.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Enqueues a task with a fresh id and the type's defaults.
    pub async fn enqueue<T: Task>(&self, task: &T) -> Result<Enqueued, EnqueueError> {
        self.enqueue_with(task, EnqueueOptions::default()).await
    }

    /// Enqueues a task with options (idempotency key, overrides, trace context).
    pub async fn enqueue_with<T: Task>(
        &self,
        task: &T,
        options: EnqueueOptions,
    ) -> Result<Enqueued, EnqueueError> {
        let mut options = options;
        options.track_status |= T::options().track_status;
        let options = self.with_catalog(T::QUEUE, T::NAME, options).await;
        let unique = unique::unique_scope(options.flow.as_deref());
        let prepared = self.prepare_typed(task, options)?;
        if let Some(scope) = unique {
            // Boxed: the rare unique path's KV round trips would grow every enqueue's future.
            return Box::pin(self.enqueue_unique(prepared, scope)).await;
        }
        self.publish_coalesced(prepared).await
    }

    /// Enqueues an untyped task: JSON arguments for a queue and task name.
    pub async fn enqueue_raw(&self, task: RawTask) -> Result<Enqueued, EnqueueError> {
        let options = self
            .with_catalog(&task.queue, &task.task, task.options)
            .await;
        let unique = unique::unique_scope(options.flow.as_deref());
        let prepared = self.prepare(
            Cow::Owned(task.queue),
            Cow::Owned(task.task),
            task.payload,
            options,
        )?;
        if let Some(scope) = unique {
            return Box::pin(self.enqueue_unique(prepared, scope)).await;
        }
        self.publish_coalesced(prepared).await
    }

    /// `options` with status tracking turned on where the caller did not ask for it but the
    /// task-type catalog says the type's workers track it (PROTOCOL.md, "Task-type catalog").
    /// A cached lookup: at most one catalog read per type per TTL, none when already tracked.
    pub(crate) async fn with_catalog(
        &self,
        queue: &str,
        task: &str,
        mut options: EnqueueOptions,
    ) -> EnqueueOptions {
        if options.track_status {
            return options;
        }
        options.track_status = match self.catalog.cached_tracked(queue, task) {
            Some(tracked) => tracked,
            // Boxed: reading the bucket is a future of several KB that every enqueue's future
            // would otherwise reserve room for, and it runs once per type per TTL.
            None => Box::pin(self.catalog.tracked(queue, task)).await,
        };
        options
    }

    /// The options of every task of type `T` in `enqueue_many*`: the defaults, tracked when
    /// the type or the catalog says so (looked up once).
    async fn many_options<T: Task>(&self) -> EnqueueOptions {
        let options = EnqueueOptions {
            track_status: T::options().track_status,
            ..EnqueueOptions::default()
        };
        self.with_catalog(T::QUEUE, T::NAME, options).await
    }

    /// One task from `enqueue`: alone, or in the next coalesced atomic batch where batches are
    /// on and answer sooner (group commit, `coalesce.rs`).
    async fn publish_coalesced(&self, prepared: Prepared) -> Result<Enqueued, EnqueueError> {
        match &self.coalescer {
            Some(coalescer) if self.atomic.enabled() => coalescer.enqueue(self, prepared).await,
            _ => self.publish(prepared).await,
        }
    }

    /// Enqueues many tasks. Results come back in input order, one per task; a failure of one
    /// task does not stop the others ([`Producer::enqueue_many_owned`] takes them by value).
    ///
    /// On nats-server 2.12+ the tasks are stored in **atomic batches** of up to 1,000: each
    /// batch with one write and one disk sync, all of its tasks or none (the fast way under
    /// `sync_interval: always`). A batch the server cannot store whole — a caller's key already
    /// used, a full stream, no answer in time — is sent again task by task with the same ids,
    /// so each task gets its own answer. Elsewhere tasks are sent one by one, pipelined: in
    /// order, with up to the configured window of acks outstanding.
    ///
    /// ```no_run
    /// # use jetq_contract::Task;
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct SendEmail { to: String }
    /// # impl Task for SendEmail { const NAME: &'static str = "send_email"; const QUEUE: &'static str = "emails"; }
    /// # async fn run(producer: jetq_producer::Producer) {
    /// let emails = vec![SendEmail { to: "a@example.com".into() }, SendEmail { to: "b@example.com".into() }];
    /// for result in producer.enqueue_many(&emails).await {
    ///     match result {
    ///         Ok(enqueued) => println!("queued {}", enqueued.id),
    ///         Err(err) => eprintln!("not queued: {err}"),
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn enqueue_many<'a, T, I>(&self, tasks: I) -> Vec<Result<Enqueued, EnqueueError>>
    where
        T: Task + 'a,
        I: IntoIterator<Item = &'a T>,
    {
        let options = self.many_options::<T>().await;
        let prepared = tasks
            .into_iter()
            .map(|task| self.prepare_typed(task, options.clone()));
        self.publish_many(prepared).await
    }

    /// [`Producer::enqueue_many`] for tasks given by value (e.g. built by an iterator).
    pub async fn enqueue_many_owned<T, I>(&self, tasks: I) -> Vec<Result<Enqueued, EnqueueError>>
    where
        T: Task,
        I: IntoIterator<Item = T>,
    {
        let options = self.many_options::<T>().await;
        let prepared = tasks
            .into_iter()
            .map(|task| self.prepare_typed(&task, options.clone()));
        self.publish_many(prepared).await
    }

    /// [`Producer::enqueue_many`] for untyped tasks.
    pub async fn enqueue_many_raw<I>(&self, tasks: I) -> Vec<Result<Enqueued, EnqueueError>>
    where
        I: IntoIterator<Item = RawTask>,
    {
        let mut tasks: Vec<RawTask> = tasks.into_iter().collect();
        if unique::any_unique(&tasks) {
            // Each unique key is taken before its task is published: one by one.
            return Box::pin(self.enqueue_many_unique(tasks)).await;
        }
        // One catalog lookup per (queue, task) of the tasks not already tracked.
        let mut tracked: HashMap<(String, String), bool> = HashMap::new();
        for task in &tasks {
            if task.options.track_status {
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(slot) =
                tracked.entry((task.queue.clone(), task.task.clone()))
            {
                let is_tracked = Box::pin(self.catalog.tracked(&task.queue, &task.task)).await;
                slot.insert(is_tracked);
            }
        }
        if tracked.values().any(|&is_tracked| is_tracked) {
            for task in &mut tasks {
                let pair = (task.queue.clone(), task.task.clone());
                if tracked.get(&pair).copied().unwrap_or(false) {
                    task.options.track_status = true;
                }
            }
        }
        let prepared = tasks.into_iter().map(|t| {
            self.prepare(
                Cow::Owned(t.queue),
                Cow::Owned(t.task),
                t.payload,
                t.options,
            )
        });
        self.publish_many(prepared).await
    }

    async fn send(&self, prepared: &Prepared) -> Result<PublishAckFuture, EnqueueError> {
        if prepared.tracked {
            // The status bucket must exist before a worker can pull this task: a worker with no
            // tracked types of its own does not create it, and would run the task unrecorded.
            // Boxed: opening a KV bucket is a future of several KB, and without the box every
            // enqueue's future would reserve room for it.
            Box::pin(self.status.open_before_tracked_publish())
                .instrument(prepared.span.clone())
                .await;
        }
        let message = PublishMessage::build()
            .payload(prepared.payload.clone())
            .headers(prepared.headers());
        self.js
            .send_publish(prepared.subject.clone(), message)
            .instrument(prepared.span.clone())
            .await
            .map_err(|err| self.classify(prepared, err))
    }

    /// Sends the first attempt of a task and waits for its ack (resending while acks time out).
    async fn publish(&self, prepared: Prepared) -> Result<Enqueued, EnqueueError> {
        match self.send_first(&prepared).await {
            Ok(first) => self.publish_traced(prepared, first).await,
            Err(err) => Err(self.failed(&prepared, err)),
        }
    }

    /// The first send of a task: `Ok(None)` when the send itself timed out (the retry loop of
    /// [`Producer::publish_traced`] sends it again), `Err` when it cannot be sent at all.
    async fn send_first(
        &self,
        prepared: &Prepared,
    ) -> Result<Option<PublishAckFuture>, EnqueueError> {
        match self.send(prepared).await {
            Ok(ack_future) => Ok(Some(ack_future)),
            Err(EnqueueError::Timeout { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Records a failed enqueue in the metrics and on its span.
    fn failed(&self, prepared: &Prepared, err: EnqueueError) -> EnqueueError {
        self.metrics
            .failed(prepared.queue.clone(), prepared.task.clone(), &err);
        telemetry::record_error(&prepared.span, &err);
        err
    }

    /// Awaits the ack of the first attempt `first` (already sent), resending with the same id
    /// while acks time out, inside the task's `send` span; records the outcome on the span and
    /// in the metrics.
    ///
    /// This future is what `enqueue_many` keeps in flight for every outstanding task, so it is
    /// kept small: the rare paths (a resend, a tracked task's status record) are boxed.
    async fn publish_traced(
        &self,
        prepared: Prepared,
        first: Option<PublishAckFuture>,
    ) -> Result<Enqueued, EnqueueError> {
        let result = self
            .publish_until_acked(&prepared, first)
            .instrument(prepared.span.clone())
            .await;
        let (sequence, duplicate) = match result {
            Ok(acked) => acked,
            Err(err) => return Err(self.failed(&prepared, err)),
        };
        self.acked(prepared, sequence, duplicate).await
    }

    /// What follows a task's ack: metrics, its span's sequence, its `queued` status record.
    async fn acked(
        &self,
        prepared: Prepared,
        sequence: u64,
        duplicate: bool,
    ) -> Result<Enqueued, EnqueueError> {
        if !duplicate {
            self.metrics
                .enqueued(prepared.queue.clone(), prepared.task.clone());
        }
        if !prepared.span.is_disabled() {
            prepared.span.set_attribute(
                "jetq.task.sequence",
                i64::try_from(sequence).unwrap_or(i64::MAX),
            );
        }
        let queued = status::Queued::of(self, &prepared);
        let enqueued = Enqueued {
            id: prepared.id,
            sequence,
            duplicate,
        };
        if let Some(queued) = queued {
            Box::pin(self.record_queued(queued, &enqueued)).await;
        }
        Ok(enqueued)
    }

    /// `enqueue_many`: in atomic batches where the server stores them (one write and one sync
    /// per batch, see `atomic.rs`), else (or for a batch that could not be stored whole) one by
    /// one, pipelined.
    async fn publish_many<I>(&self, prepared: I) -> Vec<Result<Enqueued, EnqueueError>>
    where
        I: IntoIterator<Item = Result<Prepared, EnqueueError>>,
    {
        if !self.atomic.enabled() {
            return self.publish_pipelined(prepared).await;
        }
        let mut results: Vec<Option<Result<Enqueued, EnqueueError>>> = Vec::new();
        let mut chunk: Vec<(usize, Prepared)> = Vec::new();
        let mut committing = FuturesUnordered::new();
        let mut items = prepared.into_iter().enumerate().peekable();
        while let Some((index, item)) = items.next() {
            results.push(None);
            match item {
                Ok(prepared) => chunk.push((index, prepared)),
                Err(err) => results[index] = Some(Err(err)),
            }
            if chunk.len() < atomic::MAX_BATCH && items.peek().is_some() {
                continue;
            }
            if chunk.is_empty() {
                continue;
            }
            // Batches are sent in order; their commits' answers are awaited concurrently, a few
            // at a time, so the next batch travels while the last one is synced.
            while committing.len() >= BATCHES_IN_FLIGHT {
                if let Some(done) = committing.next().await {
                    self.settle_chunk(done, &mut results).await;
                }
            }
            let chunk = std::mem::take(&mut chunk);
            match self.send_chunk(&chunk).await {
                Ok(pending) => {
                    committing.push(async move { (chunk, self.finish_batch(pending).await) })
                }
                Err(batched) => self.settle_chunk((chunk, batched), &mut results).await,
            }
        }
        while let Some(done) = committing.next().await {
            self.settle_chunk(done, &mut results).await;
        }
        collect(results)
    }

    /// Sends one chunk of `enqueue_many` as an atomic batch (a single task goes one by one).
    async fn send_chunk(
        &self,
        chunk: &[(usize, Prepared)],
    ) -> Result<atomic::PendingCommit, atomic::Batched> {
        if chunk.len() < 2 || !self.atomic.enabled() {
            return Err(atomic::Batched::OneByOne { resend: false });
        }
        if chunk.iter().any(|(_, task)| task.tracked) {
            Box::pin(self.status.open_before_tracked_publish()).await;
        }
        let tasks: Vec<&Prepared> = chunk.iter().map(|(_, task)| task).collect();
        self.start_batch(&tasks).await
    }

    /// Turns a chunk's batch outcome into its tasks' results, sending them one by one when the
    /// batch did not store them (see `atomic.rs`).
    async fn settle_chunk(
        &self,
        (chunk, batched): (Vec<(usize, Prepared)>, atomic::Batched),
        results: &mut [Option<Result<Enqueued, EnqueueError>>],
    ) {
        let (indexes, mut tasks): (Vec<usize>, Vec<Prepared>) = chunk.into_iter().unzip();
        match batched {
            atomic::Batched::Stored { last_sequence } => {
                let first = last_sequence + 1 - tasks.len() as u64;
                for (offset, (index, task)) in indexes.into_iter().zip(tasks).enumerate() {
                    let sequence = first + offset as u64;
                    results[index] = Some(self.acked(task, sequence, false).await);
                }
            }
            atomic::Batched::OneByOne { resend } => {
                for task in &mut tasks {
                    task.resent = resend;
                }
                let one_by_one = self.publish_pipelined(tasks.into_iter().map(Ok)).await;
                for (index, result) in indexes.into_iter().zip(one_by_one) {
                    results[index] = Some(result);
                }
            }
        }
    }

    async fn publish_pipelined<I>(&self, prepared: I) -> Vec<Result<Enqueued, EnqueueError>>
    where
        I: IntoIterator<Item = Result<Prepared, EnqueueError>>,
    {
        let mut results: Vec<Option<Result<Enqueued, EnqueueError>>> = Vec::new();
        let mut in_flight = FuturesUnordered::new();
        for (index, item) in prepared.into_iter().enumerate() {
            results.push(None);
            let prepared = match item {
                Ok(prepared) => prepared,
                Err(err) => {
                    results[index] = Some(Err(err));
                    continue;
                }
            };
            while in_flight.len() >= self.window {
                if let Some((done, result)) = in_flight.next().await {
                    results[done] = Some(result);
                }
            }
            // Send in input order now; only the ack waits (and any resend) run concurrently.
            match self.send_first(&prepared).await {
                Ok(first) => in_flight
                    .push(async move { (index, self.publish_traced(prepared, first).await) }),
                Err(err) => results[index] = Some(Err(self.failed(&prepared, err))),
            }
        }
        while let Some((done, result)) = in_flight.next().await {
            results[done] = Some(result);
        }
        collect(results)
    }
}
