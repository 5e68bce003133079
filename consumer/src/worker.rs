//! The [`Worker`]: pulls tasks for its registered types and runs them until shut down.

use std::{future::Future, sync::Arc, time::Duration};

use async_nats::jetstream::consumer::PullConsumer;
use bytes::Bytes;
use jetq_contract::{
    name, ConnectionConfig, NameKind, Priority, StreamSettings, Subjects, Task, TaskOptions,
    Topology,
};
use opentelemetry::metrics::Meter;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{
    attempts::Attempts,
    context::TaskContext,
    dead_letter::DeadLetters,
    error::{TaskError, WorkerError},
    execution::Executor,
    handler::{Registration, Registry},
    limits::{self, FlowControl, Limits},
    presence::{self, Presence},
    pull,
    purger::{PurgedLevel, Purger},
    settings::WorkerSettings,
    stall::StallWatch,
    status::StatusRecorder,
    sweeper::Sweeper,
    telemetry::{self, WorkerHealth, WorkerMetrics},
};

mod catalog;
mod durables;
use catalog::publish_catalog;
pub use durables::{existing_consumer, existing_consumers};

/// Builds a [`Worker`]: connection, settings and one handler per task type.
///
/// ```no_run
/// use jetq_consumer::{TaskContext, TaskError, Worker};
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
/// # async fn run() -> Result<(), jetq_consumer::WorkerError> {
/// let worker = Worker::builder()
///     .url("nats://127.0.0.1:4222")
///     .concurrency(32)
///     .handler(|email: SendEmail, ctx: TaskContext| async move {
///         println!("attempt {} for {}", ctx.attempt(), email.to);
///         Ok::<(), TaskError>(())
///     })
///     .build()
///     .await?;
/// worker.run().await; // until SIGTERM or SIGINT
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct WorkerBuilder {
    connection: ConnectionConfig,
    streams: StreamSettings,
    settings: WorkerSettings,
    client: Option<async_nats::Client>,
    registrations: Vec<Registration>,
    meter: Option<Meter>,
    provision_wait: Option<Duration>,
    /// Rate and concurrency limits by `(queue, task)` (see `limits/`).
    limits: Vec<(String, String, Limits)>,
}

impl WorkerBuilder {
    /// Server URL(s), comma separated.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.connection.nats_url = url.into();
        self
    }

    /// The whole connection configuration.
    pub fn connection(mut self, connection: ConnectionConfig) -> Self {
        self.connection = connection;
        self
    }

    /// Stream settings used when provisioning.
    pub fn streams(mut self, streams: StreamSettings) -> Self {
        self.streams = streams;
        self
    }

    /// All worker settings at once.
    pub fn settings(mut self, settings: WorkerSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Tasks of each queue run at once by this process, at most (default 16): tasks that
    /// await run side by side up to this many, short ones are chained on fewer tokio tasks.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.settings.concurrency = concurrency;
        self
    }

    /// Redelivery timeout; heartbeats go out at a third of it (default 30 s).
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.settings.ack_wait = ack_wait;
        // A pull request must end well inside ack_wait; keep the default valid for short waits
        // (the same default JETQ_ACK_WAIT gets without JETQ_FETCH_EXPIRES).
        if self.settings.fetch_expires >= ack_wait {
            self.settings.fetch_expires = WorkerSettings::default_fetch_expires(ack_wait);
        }
        self
    }

    /// Lifetime of one pull request (default a third of `ack_wait`, at most 5 s; must be shorter
    /// than `ack_wait`). Shorter means a faster stop at shutdown, longer means fewer idle
    /// requests.
    pub fn fetch_expires(mut self, expires: Duration) -> Self {
        self.settings.fetch_expires = expires;
        self
    }

    /// Most tasks of each queue fetched ahead of free slots (default 512; 0 fetches only for
    /// free slots). The prefetch starts at the concurrency and doubles while fetched tasks find
    /// a slot at once. A fetched task waits at most 500 ms for a slot (a quarter of `ack_wait`
    /// if shorter), else it is handed back for another worker and prefetching pauses.
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.settings.prefetch = Some(prefetch);
        self
    }

    /// Bytes of each queue's tasks fetched ahead of free slots (default 16 MiB; 0 prefetches
    /// nothing): each request's prefetch is cut to as many tasks as fit at the queue's recent
    /// task size.
    pub fn prefetch_bytes(mut self, bytes: u64) -> Self {
        self.settings.prefetch_bytes = Some(bytes);
        self
    }

    /// On a task stream with Limits retention (`JETQ_TASK_RETENTION=limits`), how often this
    /// worker purges its queues' finished tasks (default 1 s; docs/DURABLE_DRAIN.md). Shorter
    /// keeps fewer finished tasks stored, at two requests per level per interval.
    pub fn purge_interval(mut self, interval: Duration) -> Self {
        self.settings.purge_interval = interval;
        self
    }

    /// Keep the per-minute metrics history of this worker's queues in `<PREFIX>_METRICS`
    /// (`JETQ_HISTORY`, default on; PROTOCOL.md §15).
    pub fn history(mut self, on: bool) -> Self {
        self.settings.history = on;
        self
    }

    /// How often this worker merges its counts into the metrics history
    /// (`JETQ_HISTORY_INTERVAL`, default 60 s, at least 100 ms).
    pub fn history_interval(mut self, interval: Duration) -> Self {
        self.settings.history_interval = interval;
        self
    }

    /// With provisioning off (`JETQ_PROVISION=false`), how long `build` waits for each queue's
    /// durable consumer to be created by `jetq-provision` before it fails (default
    /// [`DEFAULT_PROVISION_BUDGET`](jetq_contract::topology::DEFAULT_PROVISION_BUDGET), the
    /// budget provisioning itself has).
    pub fn provision_wait(mut self, wait: Duration) -> Self {
        self.provision_wait = Some(wait);
        self
    }

    /// Time in-flight tasks get to finish at shutdown (default 25 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.settings.shutdown_grace = grace;
        self
    }

    /// How long a task of an unknown type is handed back before it is dead-lettered.
    pub fn unknown_task_grace(mut self, grace: Duration) -> Self {
        self.settings.unknown_task_grace = grace;
        self
    }

    /// Pulls only these queues (default: every queue with a registered handler). Each must
    /// have a handler. Same as `JETQ_QUEUES`.
    pub fn queues<I, Q>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = Q>,
        Q: Into<String>,
    {
        self.settings.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// Runs as the janitor: pulls no queue and runs only the sweeper, which dead-letters tasks
    /// whose deliveries ran out while no attempt could record the failure (a crash on the last
    /// delivery). Handlers are optional. Same as `JETQ_JANITOR=true`.
    pub fn janitor(mut self) -> Self {
        self.settings.janitor = true;
        self.settings.sweeper = true;
        self.settings.queues.clear();
        self
    }

    /// Uses an existing client instead of connecting.
    pub fn client(mut self, client: async_nats::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// The OpenTelemetry meter the worker's metrics are recorded with (default: the global
    /// meter provider's `jetq-consumer` meter, as it is when `build` is called).
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Registers the handler of task type `T`. Registering a type twice is an error at
    /// [`WorkerBuilder::build`].
    pub fn handler<T, F, Fut>(mut self, handler: F) -> Self
    where
        T: Task,
        F: Fn(T, TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        self.registrations
            .push(Registration::new::<T, F, Fut>(handler));
        self
    }

    /// Registers a raw handler by name: it gets the task's payload as the bytes on the wire
    /// (the JSON arguments, undecoded) and runs under `options` (attempts, timeout, backoff,
    /// status tracking), like a typed handler.
    ///
    /// `task` is one task type's wire name, or [`ANY_TASK`](crate::ANY_TASK) (`"*"`) for
    /// every task type of `queue` that has no handler of its own — a worker that runs tasks it
    /// has no Rust type for, such as the HTTP push worker (`jetq-push`). Names are validated at
    /// [`WorkerBuilder::build`] (an invalid one is [`WorkerError::InvalidName`]); registering
    /// the same `(queue, task)` twice is [`WorkerError::DuplicateHandler`]. A task that a
    /// catch-all takes is never "unknown": it runs instead of being handed back.
    ///
    /// ```no_run
    /// use bytes::Bytes;
    /// use jetq_consumer::{TaskContext, TaskError, TaskOptions, Worker, ANY_TASK};
    ///
    /// # async fn run() -> Result<(), jetq_consumer::WorkerError> {
    /// let worker = Worker::builder()
    ///     .url("nats://127.0.0.1:4222")
    ///     .raw_handler("webhooks", ANY_TASK, TaskOptions::default().max_attempts(5),
    ///         |payload: Bytes, ctx: TaskContext| async move {
    ///             println!("{} #{}: {} bytes", ctx.task(), ctx.attempt(), payload.len());
    ///             Ok::<(), TaskError>(())
    ///         })
    ///     .build()
    ///     .await?;
    /// worker.run().await;
    /// # Ok(()) }
    /// ```
    pub fn raw_handler<F, Fut>(
        mut self,
        queue: impl Into<String>,
        task: impl Into<String>,
        options: TaskOptions,
        handler: F,
    ) -> Self
    where
        F: Fn(Bytes, TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        self.registrations.push(Registration::raw(
            queue.into(),
            task.into(),
            options,
            handler,
        ));
        self
    }

    /// Cluster-wide rate and concurrency limits for task type `T` (docs/FLOW_CONTROL.md): every
    /// worker of `T` must register the same limits. A task over a limit is handed back until
    /// its turn — a hand-back, not an attempt. `T` needs a handler on this worker.
    ///
    /// ```no_run
    /// # use jetq_consumer::{Limits, RateLimit, TaskContext, TaskError, Worker};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct SendEmail { to: String }
    /// # impl jetq_contract::Task for SendEmail { const NAME: &'static str = "send_email"; const QUEUE: &'static str = "emails"; }
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let worker = Worker::builder()
    ///     .handler(|email: SendEmail, _ctx: TaskContext| async move { Ok::<(), TaskError>(()) })
    ///     .limits::<SendEmail>(Limits::new().rate(RateLimit::new(14.0, 14)?))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn limits<T: Task>(self, limits: Limits) -> Self {
        self.limits_for(T::QUEUE, T::NAME, limits)
    }

    /// [`WorkerBuilder::limits`] by queue and task name (for raw handlers). With task
    /// [`ANY_TASK`](crate::ANY_TASK) the limits apply to each task type of the queue that has
    /// none of its own, every type counted apart.
    pub fn limits_for(
        mut self,
        queue: impl Into<String>,
        task: impl Into<String>,
        limits: Limits,
    ) -> Self {
        self.limits.push((queue.into(), task.into(), limits));
        self
    }

    /// Validates the handlers, connects, provisions and returns a worker ready to run.
    pub async fn build(self) -> Result<Worker, WorkerError> {
        self.connection.validate()?;
        self.streams.validate()?;
        self.settings.validate()?;
        let subjects = self.connection.subjects()?;
        let registry = self.registry()?;
        let queues = self.pulled_queues(&registry)?;
        let limit_table = limits::table(&self.limits, |queue, task| {
            registry.lookup(queue, task).is_some()
        })?;

        let client = jetq_contract::bootstrap::connect_or_adopt(
            &self.connection,
            self.client,
            "jetq-worker",
        )
        .await?;
        let js = jetq_contract::jetstream(client.clone(), &self.connection);
        let meter = self.meter.clone().unwrap_or_else(telemetry::meter);
        // Creates what is missing; existing streams are compared, never changed (a worker
        // started without JETQ_STREAM_MAX_MSGS must not lift an operator's limit): differences
        // are logged and counted. Requests are retried while a fresh cluster elects leaders.
        let topology =
            Topology::new(js.clone(), subjects.clone(), self.streams.clone()).with_meter(&meter);
        if self.settings.provision {
            topology.ensure_streams().await?;
        }
        let mut consumers = Vec::new();
        for queue in &queues {
            let levels = if self.settings.provision {
                topology
                    .ensure_queue_levels(queue, &self.settings.queue_settings())
                    .await?
            } else {
                existing_consumers(
                    &topology,
                    queue,
                    self.provision_wait
                        .unwrap_or(jetq_contract::topology::DEFAULT_PROVISION_BUDGET),
                )
                .await?
            };
            consumers.push((queue.clone(), levels));
        }
        let history = topology.attempts_bucket().await.ok();
        if history.is_none() {
            tracing::warn!(
                "attempt-history bucket missing: dead letters will hold only the final error"
            );
        }
        let sweeper = if self.settings.sweeper {
            let advisories = topology.ensure_sweeper_consumer().await?;
            let tasks = topology.stream(&subjects.tasks_stream()).await?;
            Some((advisories, tasks))
        } else {
            None
        };
        // A Limits task stream keeps acked tasks until a purge (docs/DURABLE_DRAIN.md): the
        // stream as it exists decides, not this process's JETQ_TASK_RETENTION.
        let purger = if consumers.is_empty() {
            None
        } else {
            let tasks = topology.stream(&subjects.tasks_stream()).await?;
            let limits = tasks.cached_info().config.retention
                == async_nats::jetstream::stream::RetentionPolicy::Limits;
            let advisories = if limits {
                match topology.stream(&subjects.advisories_stream()).await {
                    Ok(advisories) => Some(advisories),
                    Err(err) => {
                        // The purge would be blind to tasks whose deliveries ran out and could
                        // remove one before the sweeper copies it: no purge at all.
                        tracing::error!(
                            error = %err,
                            stream = %subjects.advisories_stream(),
                            "the task stream has Limits retention but the advisory stream cannot \
                             be read (STREAM.INFO / STREAM.MSG.GET): this worker will not purge \
                             finished tasks"
                        );
                        None
                    }
                }
            } else {
                None
            };
            if let Some(advisories) = advisories {
                Some(Purger {
                    levels: consumers
                        .iter()
                        .flat_map(|(queue, levels)| {
                            levels.iter().map(|(level, consumer)| PurgedLevel {
                                queue: queue.clone(),
                                level: *level,
                                consumer: consumer.clone(),
                            })
                        })
                        .collect(),
                    tasks,
                    advisories,
                    subjects: subjects.clone(),
                    interval: self.settings.purge_interval,
                })
            } else {
                None
            }
        };
        publish_catalog(&topology, &registry, &queues, self.settings.provision).await;
        let presence = if queues.is_empty() {
            None
        } else {
            presence::open(
                &topology,
                self.settings.provision,
                self.settings.presence_interval,
            )
            .await
            .map(|store| Presence {
                store,
                interval: self.settings.presence_interval,
                prefix: subjects.prefix().to_owned(),
                queues: queues.clone(),
                concurrency: self.settings.concurrency,
                client: client.clone(),
            })
        };
        let metrics_history = if self.settings.history && !queues.is_empty() {
            crate::history::open(
                &topology,
                self.settings.provision,
                self.settings.history_interval,
            )
            .await
        } else {
            None
        };
        let any_tracked = registry.registrations().any(|r| r.options.track_status);
        let flow = FlowControl::new(
            &topology,
            limit_table,
            self.settings.provision,
            self.settings.ack_wait,
            &meter,
        )
        .await?;
        let recheck = self.settings.heartbeat_interval();
        let dead_letter_topology = topology.clone();
        let status = StatusRecorder::new(
            topology,
            client.clone(),
            recheck,
            any_tracked,
            self.settings.provision,
        )
        .await?;
        let metrics = WorkerMetrics::new(&meter).with_history(metrics_history);
        let dead_letters = DeadLetters::new(
            dead_letter_topology,
            Attempts::new(history),
            metrics.clone(),
            self.settings.provision,
        );
        Ok(Worker {
            health: WorkerHealth::new(client.clone()),
            metrics,
            client,
            subjects,
            settings: self.settings,
            registry,
            consumers,
            sweeper,
            purger,
            presence,
            dead_letters,
            status,
            flow: Arc::new(flow),
        })
    }

    /// The queues to pull: none for a janitor, the listed ones (each with a handler), or every
    /// queue with a handler.
    fn pulled_queues(&self, registry: &Registry) -> Result<Vec<String>, WorkerError> {
        let mut handled: Vec<String> = registry.queues().map(str::to_owned).collect();
        handled.sort();
        handled.dedup();
        if self.settings.janitor {
            return Ok(Vec::new());
        }
        if self.settings.queues.is_empty() {
            return Ok(handled);
        }
        let mut listed = self.settings.queues.clone();
        listed.sort();
        listed.dedup();
        for queue in &listed {
            if !handled.contains(queue) {
                return Err(WorkerError::QueueWithoutHandlers {
                    queue: queue.clone(),
                    handled: handled.join(", "),
                });
            }
        }
        Ok(listed)
    }

    fn registry(&self) -> Result<Registry, WorkerError> {
        if self.registrations.is_empty() && !self.settings.janitor {
            return Err(WorkerError::NoHandlers);
        }
        let mut registry = Registry::default();
        for registration in &self.registrations {
            name::validate(NameKind::Queue, &registration.queue)?;
            if !registration.is_catch_all() {
                name::validate(NameKind::Task, &registration.task)?;
            }
            let attempts = registration.options.max_attempts;
            if i64::from(attempts) >= self.settings.max_deliver {
                return Err(WorkerError::AttemptsExceedDeliveries {
                    queue: registration.queue.to_string(),
                    task: registration.task.to_string(),
                    max_attempts: attempts,
                    max_deliver: self.settings.max_deliver,
                });
            }
            if !registry.insert(registration.clone()) {
                return Err(WorkerError::DuplicateHandler {
                    queue: registration.queue.to_string(),
                    task: registration.task.to_string(),
                });
            }
        }
        Ok(registry)
    }
}

/// A worker process: one pull loop per queue, each running at most `concurrency` tasks.
pub struct Worker {
    client: async_nats::Client,
    subjects: Subjects,
    settings: WorkerSettings,
    registry: Registry,
    /// Each pulled queue's durables, one per priority level.
    consumers: Vec<(String, Vec<(Priority, PullConsumer)>)>,
    sweeper: Option<(PullConsumer, async_nats::jetstream::stream::Stream)>,
    /// Purges finished tasks when the task stream has Limits retention.
    purger: Option<Purger>,
    /// This process's record in `<PREFIX>_WORKERS`, when the bucket is available.
    presence: Option<Presence>,
    dead_letters: DeadLetters,
    metrics: WorkerMetrics,
    health: WorkerHealth,
    status: StatusRecorder,
    flow: Arc<FlowControl>,
}

impl Worker {
    /// A builder with defaults.
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder::default()
    }

    /// A builder configured from `JETQ_*` environment variables; add handlers, then build.
    pub fn from_env() -> Result<WorkerBuilder, WorkerError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Ok(WorkerBuilder::default()
            .connection(ConnectionConfig::from_env_iter(vars.clone())?)
            .streams(StreamSettings::from_env_iter(vars.clone())?)
            .settings(WorkerSettings::from_env_iter(vars)?))
    }

    /// The queues this worker pulls from.
    pub fn queues(&self) -> Vec<&str> {
        self.consumers
            .iter()
            .map(|(queue, _)| queue.as_str())
            .collect()
    }

    /// The underlying client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The worker's readiness, for a `/readyz` endpoint: ready while it runs, its NATS
    /// connection is up and its queues' durable consumers exist. Take it before `run`.
    pub fn health(&self) -> WorkerHealth {
        self.health.clone()
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run(self) {
        self.run_until(shutdown_signal()).await
    }

    /// Runs until `shutdown` resolves, then shuts down gracefully: stop pulling, give in-flight
    /// tasks the grace period to finish, hand the rest back at once (NAK without delay) so
    /// another worker takes them without waiting for ack_wait.
    pub async fn run_until<F>(self, shutdown: F)
    where
        F: Future<Output = ()> + Send,
    {
        let stop_pulling = CancellationToken::new();
        let hand_back = CancellationToken::new();
        let mut loops = Vec::new();
        let executor = Arc::new(Executor {
            registry: self.registry,
            dead_letters: self.dead_letters.clone(),
            settings: self.settings.clone(),
            subjects: self.subjects.clone(),
            shutdown: stop_pulling.clone(),
            hand_back: hand_back.clone(),
            metrics: self.metrics.clone(),
            status: self.status.clone(),
            stall: StallWatch::start(self.settings.heartbeat_interval(), self.metrics.clone()),
            flow: self.flow.clone(),
        });
        loops.push(tokio::spawn(telemetry::watch_queues(
            self.consumers
                .iter()
                .flat_map(|(queue, levels)| {
                    levels
                        .iter()
                        .map(|(level, consumer)| (queue.clone(), *level, consumer.clone()))
                })
                .collect(),
            self.metrics.clone(),
            self.health.clone(),
            self.settings.metrics_interval,
            stop_pulling.clone(),
        )));
        let concurrency = self.settings.concurrency;
        let mut slots = Vec::new();
        let queue_names: Vec<String> = self.consumers.iter().map(|(q, _)| q.clone()).collect();
        for (queue, levels) in self.consumers {
            let semaphore = Arc::new(Semaphore::new(concurrency));
            slots.push(semaphore.clone());
            loops.push(tokio::spawn(pull::pull_loop(
                queue,
                levels,
                executor.jetstream().clone(),
                semaphore,
                pull::PullSettings {
                    concurrency,
                    prefetch: self.settings.prefetch(),
                    prefetch_bytes: usize::try_from(self.settings.prefetch_bytes())
                        .unwrap_or(usize::MAX),
                    expires: self.settings.fetch_expires,
                    max_buffer_wait: pull::max_buffer_wait(self.settings.ack_wait),
                },
                executor.clone(),
                stop_pulling.clone(),
            )));
        }
        // Presence outlives the pull loops: it lists the tasks that finish during the grace
        // period, and its record is deleted only once they are done.
        let presence_stop = CancellationToken::new();
        let presence = self.presence.map(|presence| {
            tokio::spawn(presence.run(executor.stall.clone(), presence_stop.clone()))
        });
        let history_stop = CancellationToken::new();
        let history = self
            .metrics
            .history()
            .map(|history| tokio::spawn(history.run_flusher(history_stop.clone())));
        if let Some(purger) = self.purger {
            loops.push(tokio::spawn(purger.run(stop_pulling.clone())));
        }
        if let Some((advisories, tasks)) = self.sweeper {
            let sweeper = Sweeper {
                advisories,
                tasks,
                subjects: self.subjects.clone(),
                dead_letters: self.dead_letters.clone(),
                poll: self.settings.fetch_expires,
                status: self.status.clone(),
            };
            loops.push(tokio::spawn(sweeper.run(stop_pulling.clone())));
        }
        self.health.set_running(true);
        tracing::info!(queues = ?queue_names, prefix = self.subjects.prefix(), concurrency, "worker running");

        shutdown.await;
        self.health.set_running(false);
        tracing::info!(grace = ?self.settings.shutdown_grace, "shutting down: no new tasks");
        stop_pulling.cancel();

        let all_idle = async {
            for semaphore in &slots {
                // Every slot back means every task of that queue has finished.
                let _ = semaphore.acquire_many(concurrency as u32).await;
            }
        };
        if tokio::time::timeout(self.settings.shutdown_grace, all_idle)
            .await
            .is_err()
        {
            tracing::warn!("grace period over: handing running tasks back");
            hand_back.cancel();
            let handed_back = async {
                for semaphore in &slots {
                    let _ = semaphore.acquire_many(concurrency as u32).await;
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), handed_back).await;
        }
        for pull in loops {
            let _ = pull.await;
        }
        presence_stop.cancel();
        if let Some(presence) = presence {
            let _ = presence.await;
        }
        // The last counts, once every task has ended.
        history_stop.cancel();
        if let Some(history) = history {
            let _ = history.await;
        }
        if let Err(err) = self.client.flush().await {
            tracing::warn!(error = %err, "could not flush the last acks");
        }
        tracing::info!("worker stopped");
    }
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C): the contract's, shared by every jetq
/// component.
pub use jetq_contract::bootstrap::shutdown_signal;
