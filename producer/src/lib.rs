//! The jetq producer: what a web application links to enqueue tasks onto NATS JetStream.
//!
//! - [`Producer::enqueue`] returns only after JetStream acknowledged the task;
//! - [`EnqueueOptions::key`] gives server-side deduplication (idempotent enqueue);
//! - [`Producer::enqueue_many`] pipelines publishes through a bounded window of acks;
//! - [`Producer::enqueue_in`] / [`Producer::enqueue_at`] enqueue delayed tasks (up to 30 days by
//!   default), released by `jetq-scheduler` when due;
//! - [`Producer::status`], [`Producer::wait`], [`Producer::watch`], [`Producer::cancel`] and
//!   [`Producer::artifact`] follow tracked tasks (`TaskOptions::track_status`) to their result;
//! - every failure is an [`EnqueueError`] variant a caller can match on;
//! - every enqueue is traced (a `send <subject>` span whose W3C context travels in the task's
//!   headers) and counted (see `docs/OBSERVABILITY.md`).
//!
//! Configuration comes from `JETQ_*` environment variables ([`Producer::from_env`]) or the
//! [`ProducerBuilder`]. See `docs/PROTOCOL.md` for the wire format.

pub mod catalog;
mod error;
pub mod message;
mod options;
mod producer;
mod settings;
mod telemetry;

pub use error::{EnqueueError, ProducerError};
pub use jetq_contract::flow::{FlowError, UniqueScope};
pub use jetq_contract::{self as contract, Priority, Task, TaskOptions};
pub use options::{EnqueueOptions, Enqueued};
pub use producer::batch::{Batch, BatchHandle, BatchOptions, BatchStatus, Chain, ChainHandle};
pub use producer::delayed::DelayError;
pub use producer::status::{Artifact, CancelOutcome, StatusError, StatusStream};
pub use producer::unique::Unique;
pub use producer::{Producer, ProducerBuilder, RawTask};
pub use settings::{GroupCommit, ProducerSettings};
