//! Provisioning: create the streams, the buckets and the durable consumer of each queue. Every
//! call is idempotent and safe when many processes start at once, so every component can run it
//! at startup.
//!
//! **Who changes an existing stream.** Creating is create-first: a stream or bucket that does
//! not exist is created as this process is configured; one that exists exactly as configured is
//! left alone. One that exists with other settings is *compared*, field by field: under
//! [`Existing::Verify`] (workers, schedulers, producers) it is left unchanged and each difference
//! is logged as a warning naming the variable that would match it, and counted in
//! [`PROVISION_MISMATCHES`]; only under [`Existing::Reconcile`] (the explicit provisioner,
//! `jetq-provision`) is it updated. A worker started without `JETQ_STREAM_MAX_MSGS` therefore
//! never lifts a limit an operator set.
//!
//! **A fresh cluster.** Until the cluster has elected its leaders, JetStream API requests time
//! out or answer "temporarily unavailable". Every request here is retried on such errors with
//! backoff for [`DEFAULT_PROVISION_BUDGET`] (see [`Topology::with_budget`]), then fails naming
//! the object and how long it waited. (The client's create-or-update sends an update, then a
//! create; several processes doing that at once on a new cluster left requests unanswered and
//! crashed workers one stream at a time.)
//!
//! - Task stream: WorkQueue retention (an acked task is gone), file storage and `discard: New`,
//!   so a full stream refuses the enqueue instead of deleting unprocessed tasks.
//! - Dead-letter stream: Limits retention with a max age, so dead letters stay inspectable and
//!   replayable until they expire.
//! - Advisory stream: captures `MAX_DELIVERIES` advisories of the task stream, which the server
//!   only publishes as plain messages (lost unless a stream holds them).
//! - One durable pull consumer per queue with explicit acks. It never gets an
//!   `inactive_threshold`: a queue scaled to zero pods must keep its durable.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, DeliverPolicy},
    kv,
    stream::{DiscardPolicy, RetentionPolicy, StorageType},
    ErrorCode,
};
use opentelemetry::{metrics::Counter, KeyValue};

use crate::{
    config::{StreamSettings, TaskRetention},
    priority::Priority,
    subject::Subjects,
};

/// How long provisioning keeps retrying a request that timed out or found JetStream not ready
/// (no leader yet, cluster not available) before it fails. A fresh three-node cluster elects
/// its meta leader and then each stream's leader within seconds; a minute covers a slow
/// start without hiding a cluster that is really down.
pub const DEFAULT_PROVISION_BUDGET: Duration = Duration::from_secs(60);

/// Counter of settings of an existing stream or bucket that differ from a process's own and
/// were left unchanged (attributes `jetq.stream`, `jetq.setting`).
pub const PROVISION_MISMATCHES: &str = "jetq.provision.mismatches";

mod checks;
mod retry;

pub(crate) use checks::*;
use retry::{has_code, Attempted};

/// A boxed error from the NATS client.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Provisioning failed; the message names the stream, bucket or queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// A stream could not be created or reconciled (JetStream disabled, permissions, a conflicting
    /// existing stream, …).
    #[error("cannot create or update stream {name}: {source}")]
    Stream {
        /// The stream name.
        name: String,
        /// The server's or client's error.
        source: BoxError,
    },
    /// The explicit provisioner was asked for another retention than the existing stream has:
    /// NATS cannot change a stream's retention in place.
    #[error(
        "stream {name} has retention {existing} but JETQ_TASK_RETENTION asks for {wanted}: NATS \
         cannot change a stream's retention in place; wait until the queues are empty \
         (jetq queues), delete the stream (nats stream rm {name}) and provision again, or set \
         JETQ_TASK_RETENTION to match the stream (docs/DURABLE_DRAIN.md, \"Migration\")"
    )]
    RetentionChange {
        /// The stream name.
        name: String,
        /// Its retention.
        existing: String,
        /// The retention the settings ask for.
        wanted: String,
    },
    /// A queue's durable consumer could not be created or reconciled.
    #[error("cannot create or update the durable consumer {durable} of queue {queue}: {source}")]
    Consumer {
        /// The queue.
        queue: String,
        /// The durable consumer's name.
        durable: String,
        /// The server's or client's error.
        source: BoxError,
    },
    /// The attempt-history bucket could not be created.
    #[error("cannot create key-value bucket {bucket}: {source}")]
    Bucket {
        /// The bucket name.
        bucket: String,
        /// The server's or client's error.
        source: BoxError,
    },
    /// JetStream did not become ready (requests timed out, no leader, cluster unavailable)
    /// within the provisioning budget.
    #[error(
        "cannot provision {name}: JetStream was not ready after {attempts} attempts in \
         {waited:?} (is JetStream enabled, the cluster up and its leader elected? A request that \
         times out while the server answers others is usually refused by the NATS user's \
         permissions): {source}"
    )]
    Unavailable {
        /// The stream, bucket or consumer.
        name: String,
        /// Requests sent.
        attempts: u32,
        /// Time spent trying.
        waited: Duration,
        /// The last error.
        source: BoxError,
    },
    /// A process running with `JETQ_PROVISION=false` found a stream or bucket it needs missing
    /// (or not readable with its NATS user).
    #[error(
        "{name} is missing or not readable: {source}; create it with jetq-provision (as the \
         admin user) or run with JETQ_PROVISION=true"
    )]
    Missing {
        /// The stream or bucket name.
        name: String,
        /// The server's or client's error.
        source: BoxError,
    },
}

/// Settings of one queue's durable consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    /// How long a delivered task may go without an ack or a progress heartbeat before the
    /// server redelivers it. Workers send heartbeats at a third of this.
    pub ack_wait: Duration,
    /// Deliveries after which the server gives up on a task (every retry is a delivery).
    /// Must exceed every task type's `max_attempts` on this queue: the extra delivery is the one
    /// on which a worker dead-letters a task whose final attempt crashed its worker.
    pub max_deliver: i64,
    /// Cluster-wide cap on tasks of this queue in flight at once, across all pods
    /// (`max_ack_pending`). Delivery stalls at the cap.
    pub max_in_flight: i64,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            ack_wait: Duration::from_secs(30),
            max_deliver: 26,
            max_in_flight: 1000,
        }
    }
}

const ADVISORY_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
const ATTEMPTS_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// What provisioning does with a stream or bucket that exists with other settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Existing {
    /// Leave it unchanged; warn (and count in [`PROVISION_MISMATCHES`]) for each setting that
    /// differs. What workers, schedulers and producers do: a process that merely starts never
    /// changes limits an operator set.
    #[default]
    Verify,
    /// Update it to this topology's settings. Only the explicit provisioner (`jetq-provision`).
    Reconcile,
}

/// One setting of an existing stream or bucket that differs from this process's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The stream (`JETQ_TASKS`, `KV_JETQ_STATUS`, …).
    pub stream: String,
    /// The setting, as `nats stream info` names it (`max_msgs`, `max_age`, …).
    pub setting: &'static str,
    /// Its value on the server.
    pub existing: String,
    /// Its value in this process's settings.
    pub configured: String,
    /// The variable that sets it, if one does.
    pub variable: Option<&'static str>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stream {} has {} {} but this process is configured with {}",
            self.stream, self.setting, self.existing, self.configured
        )?;
        match self.variable {
            Some(variable) => write!(
                f,
                " ({variable}); left unchanged: set {variable} to match, or run jetq-provision \
                 to apply this process's value"
            ),
            None => f.write_str("; left unchanged: run jetq-provision to apply it"),
        }
    }
}

/// The JetStream objects of one jetq installation (one prefix).
#[derive(Debug, Clone)]
pub struct Topology {
    js: jetstream::Context,
    subjects: Subjects,
    settings: StreamSettings,
    existing: Existing,
    budget: Duration,
    mismatches: Option<Counter<u64>>,
}

impl Topology {
    /// A topology for the given context, prefix and stream settings. It creates what is
    /// missing and leaves existing streams unchanged ([`Existing::Verify`]).
    pub fn new(js: jetstream::Context, subjects: Subjects, settings: StreamSettings) -> Self {
        Topology {
            js,
            subjects,
            settings,
            existing: Existing::Verify,
            budget: DEFAULT_PROVISION_BUDGET,
            mismatches: None,
        }
    }

    /// Updates existing streams and buckets to these settings ([`Existing::Reconcile`]): for
    /// the explicit provisioner only.
    pub fn reconciling(mut self) -> Self {
        self.existing = Existing::Reconcile;
        self
    }

    /// How long requests are retried while JetStream is not ready (default
    /// [`DEFAULT_PROVISION_BUDGET`]).
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// Counts mismatches found under [`Existing::Verify`] in [`PROVISION_MISMATCHES`] of
    /// `meter` (they are logged either way).
    pub fn with_meter(mut self, meter: &opentelemetry::metrics::Meter) -> Self {
        self.mismatches = Some(
            meter
                .u64_counter(PROVISION_MISMATCHES)
                .with_description(
                    "settings of existing jetq streams that differ from this process's and were \
                     left unchanged",
                )
                .build(),
        );
        self
    }

    /// What this topology does with existing streams and buckets.
    pub fn existing(&self) -> Existing {
        self.existing
    }

    /// The subjects of this installation.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The stream settings this topology provisions with.
    pub fn settings(&self) -> &StreamSettings {
        &self.settings
    }

    /// The task stream's configuration as jetq wants it.
    pub fn tasks_stream_config(&self) -> jetstream::stream::Config {
        jetstream::stream::Config {
            name: self.subjects.tasks_stream(),
            description: Some(match self.settings.task_retention {
                TaskRetention::WorkQueue => {
                    "jetq tasks waiting to run (WorkQueue: acked tasks are removed)".into()
                }
                TaskRetention::Limits => {
                    "jetq tasks waiting to run (Limits: workers purge acked tasks below each durable's ack floor)".into()
                }
            }),
            subjects: vec![self.subjects.all_tasks()],
            retention: match self.settings.task_retention {
                TaskRetention::WorkQueue => RetentionPolicy::WorkQueue,
                TaskRetention::Limits => RetentionPolicy::Limits,
            },
            storage: StorageType::File,
            discard: DiscardPolicy::New,
            max_messages: self.settings.stream_max_msgs,
            max_bytes: self.settings.stream_max_bytes,
            duplicate_window: self.settings.duplicate_window,
            num_replicas: self.settings.stream_replicas,
            allow_direct: true,
            // Atomic batch publish (2.12+): `enqueue_many` and coalesced enqueues store a whole
            // batch with one write and one sync (docs/OPERATIONS.md, "Durable and fast").
            // Older servers do not know the field; it is left unset for them.
            allow_atomic_publish: self.supports_atomic_batches(),
            ..Default::default()
        }
    }

    /// The stream behind an object store (`OBJ_<bucket>`) as `create_object_store` would make
    /// it, with jetq's retention and byte limit and `discard: new` (a full store refuses a new
    /// object instead of dropping old ones).
    pub(crate) fn object_store_stream_config(
        &self,
        bucket: &str,
        description: &str,
        max_age: std::time::Duration,
        max_bytes: i64,
    ) -> jetstream::stream::Config {
        jetstream::stream::Config {
            name: format!("OBJ_{bucket}"),
            description: Some(description.to_owned()),
            subjects: vec![format!("$O.{bucket}.C.>"), format!("$O.{bucket}.M.>")],
            max_age,
            max_bytes,
            storage: StorageType::File,
            num_replicas: self.settings.stream_replicas,
            discard: DiscardPolicy::New,
            allow_rollup: true,
            allow_direct: true,
            ..Default::default()
        }
    }

    /// Whether the connected server stores atomic batches (nats-server 2.12 or newer).
    pub fn supports_atomic_batches(&self) -> bool {
        let version = self.js.client().server_info().version;
        crate::connect::Version::parse(&version)
            .is_some_and(|v| v >= crate::connect::Version::new(2, 12, 0))
    }

    /// The dead-letter stream's configuration.
    pub fn dead_stream_config(&self) -> jetstream::stream::Config {
        jetstream::stream::Config {
            name: self.subjects.dead_stream(),
            description: Some("jetq dead letters: tasks that will not be retried".into()),
            subjects: vec![self.subjects.all_dead()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            discard: DiscardPolicy::Old,
            max_age: self.settings.dead_max_age,
            max_bytes: self.settings.dead_max_bytes,
            duplicate_window: self.settings.duplicate_window,
            num_replicas: self.settings.stream_replicas,
            allow_direct: true,
            ..Default::default()
        }
    }

    fn advisories_stream_config(&self) -> jetstream::stream::Config {
        jetstream::stream::Config {
            name: self.subjects.advisories_stream(),
            description: Some("jetq: max-deliveries advisories of the task stream".into()),
            subjects: vec![self.subjects.max_deliveries_advisory()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            max_age: ADVISORY_MAX_AGE,
            num_replicas: self.settings.stream_replicas,
            ..Default::default()
        }
    }

    /// Creates the task, dead-letter and advisory streams and the attempt-history bucket where
    /// they are missing; existing ones are verified or updated as [`Topology::existing`] says.
    pub async fn ensure_streams(&self) -> Result<(), ProvisionError> {
        self.ensure_tasks_stream().await?;
        self.ensure_stream(self.dead_stream_config(), DEAD_CHECKS)
            .await?;
        self.ensure_stream(self.advisories_stream_config(), ADVISORY_CHECKS)
            .await?;
        self.ensure_bucket_checked(self.attempts_bucket_config(), BUCKET_CHECKS)
            .await?;
        self.ensure_dead_payload_store().await?;
        Ok(())
    }

    /// Creates only the task stream if it is missing (what a producer needs); an existing one
    /// is verified or updated as [`Topology::existing`] says.
    pub async fn ensure_tasks_stream(&self) -> Result<(), ProvisionError> {
        self.ensure_stream(self.tasks_stream_config(), TASK_CHECKS)
            .await
    }

    /// Creates the delayed-task stream if it is missing (see [`crate::delayed`]); an existing
    /// one is verified or updated as [`Topology::existing`] says.
    pub async fn ensure_delayed_stream(&self) -> Result<(), ProvisionError> {
        let config = crate::delayed::delayed_stream_config(&self.subjects, &self.settings);
        self.ensure_stream(config, DELAYED_CHECKS).await
    }

    /// Creates a key-value bucket if it is missing and returns it; an existing one is compared
    /// on its max age, replicas and history, and verified or updated as
    /// [`Topology::existing`] says.
    pub async fn ensure_bucket(&self, config: kv::Config) -> Result<kv::Store, ProvisionError> {
        self.ensure_bucket_checked(config, BUCKET_CHECKS).await
    }

    fn attempts_bucket_config(&self) -> kv::Config {
        kv::Config {
            bucket: self.subjects.attempts_bucket(),
            description: "jetq: errors of failed attempts, until the task ends".into(),
            history: 1,
            max_age: ATTEMPTS_MAX_AGE,
            storage: StorageType::File,
            num_replicas: self.settings.stream_replicas,
            ..Default::default()
        }
    }

    /// Create-first: `create` makes a missing stream and answers success for one that exists
    /// exactly as configured, so concurrent starters never race an update against a create.
    /// Only a stream that exists with other settings is read and compared.
    pub(crate) async fn ensure_stream(
        &self,
        config: jetstream::stream::Config,
        checks: &[Check],
    ) -> Result<(), ProvisionError> {
        let name = config.name.clone();
        let stream_error = |source: BoxError| ProvisionError::Stream {
            name: name.clone(),
            source,
        };
        match self
            .retry(&name, || self.js.create_stream(config.clone()))
            .await
        {
            Ok(_) => return Ok(()),
            Err(Attempted::Final(err)) if has_code(&err, ErrorCode::STREAM_NAME_EXIST) => {}
            Err(err) => return Err(err.into_provision_error(&name, stream_error)),
        }
        let existing = self.stream_config(&name).await?;
        let mismatches = differences(&name, &existing, &config, checks);
        if mismatches.is_empty() {
            return Ok(());
        }
        match self.existing {
            Existing::Verify => self.report(&mismatches),
            Existing::Reconcile if existing.retention != config.retention => {
                return Err(ProvisionError::RetentionChange {
                    name: name.clone(),
                    existing: format!("{:?}", existing.retention),
                    wanted: format!("{:?}", config.retention),
                });
            }
            Existing::Reconcile => {
                self.retry(&name, || self.js.update_stream(&config))
                    .await
                    .map_err(|err| err.into_provision_error(&name, stream_error))?;
                report_updated(&mismatches);
            }
        }
        Ok(())
    }

    pub(crate) async fn ensure_bucket_checked(
        &self,
        config: kv::Config,
        checks: &[Check],
    ) -> Result<kv::Store, ProvisionError> {
        let bucket = config.bucket.clone();
        let bucket_error = |source: BoxError| ProvisionError::Bucket {
            bucket: bucket.clone(),
            source,
        };
        match self
            .retry(&bucket, || self.js.create_key_value(config.clone()))
            .await
        {
            Ok(store) => return Ok(store),
            Err(Attempted::Final(err)) if has_code(&err, ErrorCode::STREAM_NAME_EXIST) => {}
            Err(err) => return Err(err.into_provision_error(&bucket, bucket_error)),
        }
        let stream = format!("KV_{bucket}");
        let existing = self.stream_config(&stream).await?;
        let wanted = jetstream::stream::Config {
            name: stream.clone(),
            max_age: config.max_age,
            num_replicas: config.num_replicas,
            max_messages_per_subject: config.history,
            ..Default::default()
        };
        let mismatches = differences(&stream, &existing, &wanted, checks);
        if !mismatches.is_empty() {
            match self.existing {
                Existing::Verify => self.report(&mismatches),
                Existing::Reconcile => {
                    self.retry(&bucket, || self.js.update_key_value(config.clone()))
                        .await
                        .map_err(|err| err.into_provision_error(&bucket, bucket_error))?;
                    report_updated(&mismatches);
                }
            }
        }
        self.retry(&bucket, || self.js.get_key_value(bucket.clone()))
            .await
            .map_err(|err| err.into_provision_error(&bucket, bucket_error))
    }

    /// An existing stream's configuration as the server holds it.
    async fn stream_config(&self, name: &str) -> Result<jetstream::stream::Config, ProvisionError> {
        let stream = self
            .retry(name, || self.js.get_stream(name))
            .await
            .map_err(|err| {
                err.into_provision_error(name, |source| ProvisionError::Stream {
                    name: name.to_owned(),
                    source,
                })
            })?;
        Ok(stream.cached_info().config.clone())
    }

    /// A stream by name, retried while JetStream is not ready.
    pub async fn stream(&self, name: &str) -> Result<jetstream::stream::Stream, ProvisionError> {
        self.retry(name, || self.js.get_stream(name))
            .await
            .map_err(|err| {
                err.into_provision_error(name, |source| ProvisionError::Stream {
                    name: name.to_owned(),
                    source,
                })
            })
    }

    fn report(&self, mismatches: &[Mismatch]) {
        for mismatch in mismatches {
            tracing::warn!(
                stream = %mismatch.stream,
                setting = mismatch.setting,
                existing = %mismatch.existing,
                configured = %mismatch.configured,
                variable = mismatch.variable.unwrap_or(""),
                "{mismatch}"
            );
            if let Some(counter) = &self.mismatches {
                counter.add(
                    1,
                    &[
                        KeyValue::new("jetq.stream", mismatch.stream.clone()),
                        KeyValue::new("jetq.setting", mismatch.setting),
                    ],
                );
            }
        }
    }

    /// The attempt-history bucket (created by [`Topology::ensure_streams`]).
    pub async fn attempts_bucket(&self) -> Result<kv::Store, ProvisionError> {
        let bucket = self.subjects.attempts_bucket();
        self.retry(&bucket, || self.js.get_key_value(bucket.clone()))
            .await
            .map_err(|err| {
                err.into_provision_error(&bucket, |source| ProvisionError::Bucket {
                    bucket: bucket.clone(),
                    source,
                })
            })
    }

    /// The durable consumer configuration of `queue` (its `normal` level).
    pub fn queue_consumer_config(&self, queue: &str, settings: &QueueSettings) -> pull::Config {
        self.level_consumer_config(queue, Priority::Normal, settings)
    }

    /// The durable consumer configuration of one priority level of `queue`: every level has
    /// the queue's settings, under its own name and filter (see [`Priority`]).
    pub fn level_consumer_config(
        &self,
        queue: &str,
        level: Priority,
        settings: &QueueSettings,
    ) -> pull::Config {
        let durable = self.subjects.durable_at(queue, level);
        let description = match level {
            Priority::Normal => format!("jetq workers of queue {queue}"),
            level => format!("jetq workers of queue {queue}, priority {level}"),
        };
        pull::Config {
            durable_name: Some(durable.clone()),
            name: Some(durable),
            description: Some(description),
            filter_subject: self.subjects.queue_filter_at(queue, level),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: settings.ack_wait,
            max_deliver: settings.max_deliver,
            max_ack_pending: settings.max_in_flight,
            // Never set: a queue scaled to zero pods must keep its durable (and its position).
            inactive_threshold: Duration::ZERO,
            ..Default::default()
        }
    }

    /// Creates or reconciles the durable consumers of `queue` — one per priority level — and
    /// returns its `normal` one. The durables' settings are the workers' of that queue
    /// (`JETQ_ACK_WAIT`, `JETQ_MAX_DELIVER`, `JETQ_MAX_IN_FLIGHT`), so they are applied
    /// whatever [`Topology::existing`] says.
    pub async fn ensure_queue(
        &self,
        queue: &str,
        settings: &QueueSettings,
    ) -> Result<jetstream::consumer::PullConsumer, ProvisionError> {
        let mut levels = self.ensure_queue_levels(queue, settings).await?;
        let normal = levels
            .iter()
            .position(|(level, _)| *level == Priority::Normal)
            .unwrap_or(0);
        Ok(levels.swap_remove(normal).1)
    }

    /// Creates or reconciles the durable consumer of every priority level of `queue`, and
    /// returns them highest first. The `normal` one is created last: once it exists, so do
    /// the others (what a worker that waits for provisioning relies on).
    pub async fn ensure_queue_levels(
        &self,
        queue: &str,
        settings: &QueueSettings,
    ) -> Result<Vec<(Priority, jetstream::consumer::PullConsumer)>, ProvisionError> {
        let tasks = self.subjects.tasks_stream();
        let mut created = Vec::with_capacity(Priority::ALL.len());
        for level in [Priority::High, Priority::Low, Priority::Normal] {
            let durable = self.subjects.durable_at(queue, level);
            let consumer_error = |source: BoxError| ProvisionError::Consumer {
                queue: queue.to_owned(),
                durable: durable.clone(),
                source,
            };
            let stream = self
                .retry(&tasks, || self.js.get_stream(&tasks))
                .await
                .map_err(|err| err.into_provision_error(&durable, consumer_error))?;
            let config = self.level_consumer_config(queue, level, settings);
            let consumer = self
                .retry(&durable, || stream.create_consumer(config.clone()))
                .await
                .map_err(|err| err.into_provision_error(&durable, consumer_error))?;
            created.push((level, consumer));
        }
        created.sort_by_key(|(level, _)| *level);
        Ok(created)
    }

    /// The durable consumer on the advisory stream that the dead-letter sweeper reads.
    pub async fn ensure_sweeper_consumer(
        &self,
    ) -> Result<jetstream::consumer::PullConsumer, ProvisionError> {
        let name = self.subjects.advisories_stream();
        let stream = self.stream(&name).await?;
        let config = pull::Config {
            durable_name: Some("sweeper".into()),
            name: Some("sweeper".into()),
            description: Some("jetq: moves tasks whose deliveries ran out to dead letters".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        };
        self.retry("sweeper", || stream.create_consumer(config.clone()))
            .await
            .map_err(|err| {
                err.into_provision_error("the sweeper's consumer", |source| {
                    ProvisionError::Consumer {
                        queue: "(advisories)".into(),
                        durable: "sweeper".into(),
                        source,
                    }
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks(settings: StreamSettings) -> jetstream::stream::Config {
        let subjects = Subjects::default();
        // The configuration needs no connection; build it the way Topology does.
        jetstream::stream::Config {
            name: subjects.tasks_stream(),
            subjects: vec![subjects.all_tasks()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            discard: DiscardPolicy::New,
            max_messages: settings.stream_max_msgs,
            max_bytes: settings.stream_max_bytes,
            duplicate_window: settings.duplicate_window,
            num_replicas: settings.stream_replicas,
            ..Default::default()
        }
    }

    #[test]
    fn differences_name_each_setting_and_its_variable() {
        let existing = tasks(StreamSettings {
            stream_max_msgs: 5,
            stream_replicas: 3,
            ..StreamSettings::default()
        });
        let wanted = tasks(StreamSettings::default());
        let found = differences("JETQ_TASKS", &existing, &wanted, TASK_CHECKS);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].setting, "max_msgs");
        assert_eq!(found[0].existing, "5");
        assert_eq!(found[0].configured, "-1 (no limit)");
        assert_eq!(found[0].variable, Some("JETQ_STREAM_MAX_MSGS"));
        let text = found[0].to_string();
        assert!(
            text.contains("JETQ_TASKS") && text.contains("JETQ_STREAM_MAX_MSGS"),
            "{text}"
        );
        assert_eq!(found[1].setting, "num_replicas");
        assert!(differences("JETQ_TASKS", &wanted, &wanted, TASK_CHECKS).is_empty());
    }

    #[test]
    fn an_unset_duplicate_window_is_the_servers_choice() {
        let existing = jetstream::stream::Config {
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        let wanted = jetstream::stream::Config::default();
        assert!(differences("X", &existing, &wanted, &[Check::DuplicateWindow]).is_empty());
    }
}
