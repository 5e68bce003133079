//! The jetq wire contract, shared byte for byte by producers, consumers and the scheduler.
//!
//! - [`Task`]: a serde type bound to a stable wire name, a queue and per-type defaults;
//! - [`name`]: the validation of queue and task names (they become subject tokens);
//! - [`Priority`]: the levels within a queue, carried in the subject ([`priority`]);
//! - [`Subjects`]: every subject, stream, consumer and bucket name, from one prefix;
//! - [`headers`]: the header names of the protocol (see `docs/PROTOCOL.md`);
//! - [`DeadLetterHeaders`]: the headers a dead letter carries (written and read, [`dead_letter`]);
//!   [`FailureRecord`]: what a dead letter says about how its task died; [`attempts`]: which
//!   deliveries count as attempts (hand-backs do not);
//! - [`ConnectionConfig`] and [`connect()`]: configuration from `JETQ_*` and a version-checked
//!   connection; [`bootstrap`]: what every builder and binary does first (connect or adopt a
//!   client, the default meter, the stop signal); [`Topology`]: idempotent provisioning of streams and queue consumers;
//! - [`publish`]: publishing until acknowledged, resending with the same id while the
//!   outcome is unknown ([`publish::Publisher`]);
//! - [`otel`]: W3C trace-context propagation in headers, span attribute and metric names;
//! - [`flow`]: flow control — unique tasks, rate and concurrency limits (PROTOCOL §10);
//! - [`status`]: status records of tracked tasks ([`TaskStatus`]), their KV keys and buckets;
//! - [`workflow`]: batches with exactly-once callbacks, chords and chains (PROTOCOL §13).

pub mod attempts;
pub mod bootstrap;
pub mod catalog;
pub mod config;
#[cfg(feature = "config-file")]
pub mod config_file;
pub mod connect;
pub mod control;
pub mod dead;
pub mod dead_letter;
pub mod delayed;
pub mod failure;
pub mod flow;
pub mod headers;
pub mod metrics_history;
pub mod name;
pub mod otel;
pub mod presence;
pub mod priority;
pub mod publish;
pub mod retry;
pub mod status;
pub mod subject;
pub mod task;
pub mod time;
pub mod topology;
pub mod wait;
pub mod workflow;

pub use config::{ConfigError, ConnectionConfig, Secret, StreamSettings};
pub use connect::{connect, jetstream, ConnectError, Version};
pub use dead_letter::DeadLetterHeaders;
pub use failure::{AttemptFailure, AttemptOutcome, DeadReason, FailureRecord, HttpFailure};
pub use name::{KeyError, NameError, NameKind};
pub use priority::{Priority, PriorityError};
pub use retry::RetryPolicy;
pub use status::{TaskState, TaskStatus};
pub use subject::Subjects;
pub use task::{Task, TaskOptions, DEFAULT_QUEUE};
pub use topology::{ProvisionError, QueueSettings, Topology};

/// Re-exported so users name the same client version jetq uses.
pub use async_nats;
