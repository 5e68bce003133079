//! jetq: a task queue for web applications on NATS JetStream.
//!
//! A web request stays fast: work of unpredictable or long duration is enqueued as a task and
//! run by workers outside the request/response cycle, with retries, timeouts and a dead-letter
//! stream. This crate is the one to depend on; its features choose the parts:
//!
//! | feature | what | from |
//! |---|---|---|
//! | `producer` (default) | [`Producer`]: enqueue, delays, idempotency keys, status of tracked tasks | `jetq-producer` |
//! | `worker` | [`Worker`]: concurrency, retries, timeouts, heartbeats, dead letters, graceful shutdown | `jetq-consumer` |
//! | `scheduler` | [`scheduler::Scheduler`]: periodic (cron) tasks and delayed-task release, embedded | `jetq-scheduler` |
//! | `telemetry` | [`telemetry::init`]: logs, OpenTelemetry export, `/healthz`, `/readyz`, `/metrics` | `jetq-telemetry` |
//! | `push-signature` | [`push_signature`]: verify the HTTP requests of jetq's push dispatch | `jetq-push-signature` |
//!
//! The [`Task`] trait, [`TaskOptions`] and the wire contract ([`contract`]) are always there.
//!
//! # Example
//!
//! A task type, its enqueue in the web app and its handler in the worker
//! (`cargo add jetq --features worker`, plus `serde` and `tokio`):
//!
//! ```no_run
#![doc = include_str!("../examples/readme.rs")]
//! ```
//!
//! Both sides read `JETQ_*` environment variables (`JETQ_NATS_URL`, default
//! `nats://127.0.0.1:4222`). The worker creates the streams and consumers it needs; see the
//! repository's `docs/OPERATIONS.md` for the server settings jetq relies on.

#![warn(missing_docs)]

/// The wire contract: task names, subjects, headers, configuration, provisioning.
pub use jetq_contract as contract;
pub use jetq_contract::{async_nats, ConfigError, RetryPolicy, Task, TaskOptions, Topology};

/// Enqueueing tasks (the `jetq-producer` crate).
#[cfg(feature = "producer")]
pub use jetq_producer as producer;
#[cfg(feature = "producer")]
pub use jetq_producer::{EnqueueError, EnqueueOptions, Enqueued, Producer, ProducerError};

/// Running tasks (the `jetq-consumer` crate).
#[cfg(feature = "worker")]
pub use jetq_consumer as worker;
#[cfg(feature = "worker")]
pub use jetq_consumer::{TaskContext, TaskError, Worker, WorkerError};

/// Periodic (cron) tasks and the release of delayed tasks (the `jetq-scheduler` crate).
#[cfg(feature = "scheduler")]
pub use jetq_scheduler as scheduler;

/// Logs, OpenTelemetry export and the health server (the `jetq-telemetry` crate).
#[cfg(feature = "telemetry")]
pub use jetq_telemetry as telemetry;

/// Signing and verifying jetq's HTTP push requests (the `jetq-push-signature` crate).
#[cfg(feature = "push-signature")]
pub use jetq_push_signature as push_signature;
