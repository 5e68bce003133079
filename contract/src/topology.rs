//! Provisioning: create-or-reconcile the streams, the attempt-history bucket and the durable
//! consumer of each queue. Every call is idempotent, so every component can run it at startup.
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
};

use crate::{config::StreamSettings, subject::Subjects};

/// A boxed error from the NATS client.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Provisioning failed; the message names the stream, bucket or queue.
#[derive(Debug, thiserror::Error)]
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

/// The JetStream objects of one jetq installation (one prefix).
#[derive(Debug, Clone)]
pub struct Topology {
    js: jetstream::Context,
    subjects: Subjects,
    settings: StreamSettings,
}

impl Topology {
    /// A topology for the given context, prefix and stream settings.
    pub fn new(js: jetstream::Context, subjects: Subjects, settings: StreamSettings) -> Self {
        Topology {
            js,
            subjects,
            settings,
        }
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
            description: Some(
                "jetq tasks waiting to run (WorkQueue: acked tasks are removed)".into(),
            ),
            subjects: vec![self.subjects.all_tasks()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            discard: DiscardPolicy::New,
            max_messages: self.settings.stream_max_msgs,
            max_bytes: self.settings.stream_max_bytes,
            duplicate_window: self.settings.duplicate_window,
            num_replicas: self.settings.stream_replicas,
            allow_direct: true,
            ..Default::default()
        }
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

    /// Creates or reconciles the task, dead-letter and advisory streams and the attempt-history
    /// bucket.
    pub async fn ensure_streams(&self) -> Result<(), ProvisionError> {
        for config in [
            self.tasks_stream_config(),
            self.dead_stream_config(),
            self.advisories_stream_config(),
        ] {
            let name = config.name.clone();
            self.js
                .create_or_update_stream(config)
                .await
                .map_err(|err| ProvisionError::Stream {
                    name,
                    source: Box::new(err),
                })?;
        }
        self.ensure_attempts_bucket().await?;
        Ok(())
    }

    /// Creates or reconciles only the task stream: what a producer needs.
    pub async fn ensure_tasks_stream(&self) -> Result<(), ProvisionError> {
        let config = self.tasks_stream_config();
        let name = config.name.clone();
        self.js
            .create_or_update_stream(config)
            .await
            .map_err(|err| ProvisionError::Stream {
                name,
                source: Box::new(err),
            })?;
        Ok(())
    }

    async fn ensure_attempts_bucket(&self) -> Result<kv::Store, ProvisionError> {
        let bucket = self.subjects.attempts_bucket();
        self.js
            .create_or_update_key_value(kv::Config {
                bucket: bucket.clone(),
                description: "jetq: errors of failed attempts, until the task ends".into(),
                history: 1,
                max_age: ATTEMPTS_MAX_AGE,
                storage: StorageType::File,
                num_replicas: self.settings.stream_replicas,
                ..Default::default()
            })
            .await
            .map_err(|err| ProvisionError::Bucket {
                bucket,
                source: Box::new(err),
            })
    }

    /// The attempt-history bucket (created by [`Topology::ensure_streams`]).
    pub async fn attempts_bucket(&self) -> Result<kv::Store, ProvisionError> {
        let bucket = self.subjects.attempts_bucket();
        self.js
            .get_key_value(bucket.clone())
            .await
            .map_err(|err| ProvisionError::Bucket {
                bucket,
                source: Box::new(err),
            })
    }

    /// The durable consumer configuration of `queue`.
    pub fn queue_consumer_config(&self, queue: &str, settings: &QueueSettings) -> pull::Config {
        let durable = self.subjects.durable(queue);
        pull::Config {
            durable_name: Some(durable.clone()),
            name: Some(durable),
            description: Some(format!("jetq workers of queue {queue}")),
            filter_subject: self.subjects.queue_filter(queue),
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

    /// Creates or reconciles the durable consumer of `queue` and returns it.
    pub async fn ensure_queue(
        &self,
        queue: &str,
        settings: &QueueSettings,
    ) -> Result<jetstream::consumer::PullConsumer, ProvisionError> {
        let durable = self.subjects.durable(queue);
        let consumer_error = |source: BoxError| ProvisionError::Consumer {
            queue: queue.to_owned(),
            durable: durable.clone(),
            source,
        };
        let stream = self
            .js
            .get_stream(self.subjects.tasks_stream())
            .await
            .map_err(|err| consumer_error(Box::new(err)))?;
        stream
            .create_consumer(self.queue_consumer_config(queue, settings))
            .await
            .map_err(|err| consumer_error(Box::new(err)))
    }

    /// The durable consumer on the advisory stream that the dead-letter sweeper reads.
    pub async fn ensure_sweeper_consumer(
        &self,
    ) -> Result<jetstream::consumer::PullConsumer, ProvisionError> {
        let name = self.subjects.advisories_stream();
        let stream = self
            .js
            .get_stream(&name)
            .await
            .map_err(|err| ProvisionError::Stream {
                name: name.clone(),
                source: Box::new(err),
            })?;
        stream
            .create_consumer(pull::Config {
                durable_name: Some("sweeper".into()),
                name: Some("sweeper".into()),
                description: Some(
                    "jetq: moves tasks whose deliveries ran out to dead letters".into(),
                ),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(|err| ProvisionError::Consumer {
                queue: "(advisories)".into(),
                durable: "sweeper".into(),
                source: Box::new(err),
            })
    }
}
